"""A stand-in for Yahoo Finance's HTTP API, mounted into a requests.Session.

yfinance's own request and parsing code runs against it, so the yahoo source is tested
offline without mocking yfinance itself. Answers follow ../shared/YFINANCE-OFFLINE.md.
"""
import json
from urllib.parse import urlparse

import requests
from requests.adapters import BaseAdapter
from requests.models import Response

from scripts.simulated_yahoo import NOT_FOUND, QUOTE_NOT_FOUND, chart_body  # noqa: F401 (chart_body: tests import it from here)


class FakeYahoo(BaseAdapter):
    """Answers every URL yfinance asks for.

    `charts` maps symbol → (status, body), an exception to raise, or a list of those given out
    one per chart call (the last one repeats).
    """

    def __init__(self, charts: dict):
        super().__init__()
        self.charts = charts
        self.urls: list[str] = []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        url = urlparse(request.url)
        if "/v8/finance/chart/" in url.path:
            answer = self.charts.get(url.path.rsplit("/", 1)[1], (404, NOT_FOUND))
            if isinstance(answer, list):
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
            if isinstance(answer, Exception):
                raise answer
            return self._response(request, *answer)
        if url.path.endswith("/getcrumb"):
            return self._response(request, 200, "fake-crumb")
        if "/quoteSummary/" in url.path:
            return self._response(request, 404, QUOTE_NOT_FOUND)
        return self._response(request, 200, "")  # fc.yahoo.com and guce consent: cookie doors

    def close(self):
        pass

    @staticmethod
    def _response(request, status: int, body) -> Response:
        response = Response()
        response.status_code = status
        response._content = (body if isinstance(body, str) else json.dumps(body)).encode()
        response.headers["Content-Type"] = "text/plain" if isinstance(body, str) else "application/json"
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response


def session_for(charts: dict) -> tuple[requests.Session, FakeYahoo]:
    """A requests.Session whose every https call goes to a FakeYahoo."""
    fake = FakeYahoo(charts)
    session = requests.Session()
    session.mount("https://", fake)
    return session, fake
