"""Checks a trends request before anything is enqueued, so bad input changes nothing."""
import re
from dataclasses import dataclass

MAX_SYMBOL_LENGTH = 15
MAX_WINDOW = 250  # a year holds about 250 trading days
MAX_HORIZON = 30
DEFAULT_WINDOW = 20
DEFAULT_HORIZON = 5
METHODS = ("trend", "anchored")  # the forecast methods jobs/forecast.py implements
# Yahoo tickers: BRK-B, ^GSPC, 0700.HK, EURUSD=X, ES=F; a caret only in front.
TICKER = re.compile(r"\^?[A-Z0-9][A-Z0-9.=-]*")


class InvalidRequest(Exception):
    """A request that is refused with 400; the message says what is wrong with it."""


@dataclass(frozen=True)
class TrendsRequest:
    symbols: list[str]
    window: int = DEFAULT_WINDOW
    horizon: int = DEFAULT_HORIZON
    method: str = "trend"


def parse_trends_request(body: object, max_symbols: int) -> TrendsRequest:
    """Validate a decoded JSON body; symbols come back trimmed, upper-cased and de-duplicated in order."""
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object such as {"symbols": ["AAPL", "MSFT"]}')
    unknown = sorted(set(body) - {"symbols", "window", "horizon", "method"})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(map(_shown, unknown))}; allowed are symbols, window, horizon, method")
    method = body.get("method", "trend")
    if method not in METHODS:
        raise InvalidRequest(f'"method" must be one of {", ".join(METHODS)}, not {_shown(method)}')
    if "symbols" not in body:
        raise InvalidRequest('"symbols" is required: a list of ticker strings such as ["AAPL", "MSFT"]')
    return TrendsRequest(
        symbols=_symbols(body["symbols"], max_symbols),
        window=_bounded_int(body, "window", DEFAULT_WINDOW, MAX_WINDOW),
        horizon=_bounded_int(body, "horizon", DEFAULT_HORIZON, MAX_HORIZON),
        method=method,
    )


def _symbols(raw: object, max_symbols: int) -> list[str]:
    if not isinstance(raw, list):
        raise InvalidRequest(f'"symbols" must be a list of strings, not {type(raw).__name__}')
    if not raw:
        raise InvalidRequest('"symbols" is empty: give at least one ticker')
    symbols: dict[str, None] = {}  # an ordered set
    for index, item in enumerate(raw):
        symbols[_symbol(index, item)] = None
    if len(symbols) > max_symbols:
        raise InvalidRequest(f'"symbols" has {len(symbols)} distinct tickers; at most {max_symbols} per request')
    return list(symbols)


def _symbol(index: int, item: object) -> str:
    if not isinstance(item, str):
        raise InvalidRequest(f"symbols[{index}] must be a string, not {type(item).__name__}")
    symbol = item.strip().upper()
    if not symbol:
        raise InvalidRequest(f"symbols[{index}] is empty")
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise InvalidRequest(f"symbols[{index}] is longer than {MAX_SYMBOL_LENGTH} characters")
    if not TICKER.fullmatch(symbol):
        raise InvalidRequest(
            f"symbols[{index}] ({_shown(item)}) is not a ticker: use letters, digits and . - = "
            "(and ^ in front for an index)"
        )
    return symbol


def _bounded_int(body: dict, name: str, default: int, maximum: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRequest(f'"{name}" must be a whole number from 1 to {maximum}, not {_shown(value)}')
    return value


def _shown(value: object) -> str:
    """A short, quoted rendering of user input for error messages."""
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
