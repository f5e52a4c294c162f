"""Yahoo's HTTP transport: every call yfinance makes goes through it, so each is governed, can be sent elsewhere, and is seen."""
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from jobs.governor import Governor

CHART_PATH = "/v8/finance/chart/"  # Yahoo's price history endpoint, the one call a symbol needs


class YahooTransport(HTTPAdapter):
    """requests' HTTP adapter for every call yfinance makes, so each one is governed, can be sent elsewhere, and is seen.

    `base_url` (YAHOO_URL) sends Yahoo's paths to a Yahoo-compatible server instead, such as the
    simulated Yahoo (scripts/simulated_yahoo.py); `source_address` (YAHOO_SOURCE_ADDRESS) binds the
    local end of each connection; `governor` gives each call its slot (a call without one is
    answered here with a 429 and never sent) and is told every answer's HTTP status.
    """

    def __init__(self, base_url: str = "", source_address: str = "", governor: Governor | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.source_address = source_address
        self.governor = governor
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        """Build urllib3's pools, bound to the source address when one is set."""
        if self.source_address:
            kwargs["source_address"] = (self.source_address, 0)
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        """Send one request (to `base_url` when set, same path and query) once it has its slot, and report its status."""
        if self.governor and not self.governor.admit():
            return _local_answer(request, 429, "Too Many Requests")  # yfinance raises its rate-limit error on it
        forwarded = request
        if self.base_url:  # a copy goes there; yfinance and the cookie jar still see Yahoo's URL
            parts = urlsplit(request.url)
            forwarded = request.copy()
            forwarded.url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            response = super().send(forwarded, **kwargs)
        except OSError:
            if self.governor:
                self.governor.observe(None)
            raise
        response.request, response.url = request, request.url
        if self.governor:
            self.governor.observe(response.status_code)
        if response.status_code == 404 and CHART_PATH in urlsplit(request.url).path:
            # Yahoo's "no such symbol" is final, and its body says so. Seeing a 404, yfinance would switch
            # cookie strategy and ask again (two more calls against the egress's budget, then the same
            # 404); handed as a 200, it reads the error from the body at once.
            response.status_code = 200
        return response


def _local_answer(request: requests.PreparedRequest, status: int, text: str) -> requests.Response:
    """Build an answer made here, not by Yahoo."""
    response = requests.Response()
    response.status_code, response._content, response.encoding = status, text.encode(), "utf-8"
    response.url, response.request = request.url, request
    response.headers["Content-Type"] = "text/plain"
    return response


def yahoo_session(base_url: str = "", source_address: str = "", governor: Governor | None = None) -> requests.Session:
    """Give the requests.Session yfinance uses: every http(s) call through one YahooTransport."""
    session = requests.Session()
    transport = YahooTransport(base_url, source_address, governor)
    session.mount("https://", transport)
    session.mount("http://", transport)
    return session
