"""A stand-in for Yahoo Finance's HTTP API, mounted into a requests.Session.

yfinance's own request and parsing code runs against it, so the yahoo source is tested
offline without mocking yfinance itself. Answers follow ../shared/YFINANCE-OFFLINE.md.
"""
import datetime as dt
import json
from urllib.parse import urlparse

import requests
from requests.adapters import BaseAdapter
from requests.models import Response

QUOTE_NOT_FOUND = {"quoteSummary": {"result": None, "error": {"code": "Not Found", "description": "Quote not found"}}}
NOT_FOUND = {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}


def chart_body(symbol: str, days: list[dt.date], closes: list[float]) -> dict:
    """A Yahoo v8 chart answer for daily bars at 16:00 New York time (21:00 UTC)."""
    stamps = [int(dt.datetime(d.year, d.month, d.day, 14, 30, tzinfo=dt.timezone.utc).timestamp()) for d in days]
    meta = {
        "currency": "USD", "symbol": symbol, "exchangeName": "NMS", "instrumentType": "EQUITY",
        "gmtoffset": -18000, "timezone": "EST", "exchangeTimezoneName": "America/New_York",
        "regularMarketPrice": closes[-1] if closes else None, "dataGranularity": "1d", "range": "1y", "priceHint": 2,
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    quote = {"open": closes, "high": closes, "low": closes, "close": closes, "volume": [1000] * len(closes)}
    return {"chart": {"result": [{"meta": meta, "timestamp": stamps,
                                  "indicators": {"quote": [quote], "adjclose": [{"adjclose": closes}]}}],
                      "error": None}}


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
