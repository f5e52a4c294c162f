"""The trends request: one pydantic model both validates every body and gives /openapi.json its schema.

Bodies are parsed and validated in one step by pydantic's JSON parser, which bounds nesting
depth, so nothing a client sends reaches Python's recursive json module.
"""
from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from jobs.records import DEFAULT_LEVEL

MAX_SYMBOL_LENGTH = 15
MAX_WINDOW = 250  # a year holds about 250 trading days
MAX_HORIZON = 30
# The forecast methods jobs/forecast.py implements, each with the words the schema and the page show.
METHODS = {"trend": "the fitted line extrapolated", "anchored": "the fitted line's slope from the last close"}
# The page's default: of the fitted methods, the one that erred least on 24 real price series (make evaluate,
# docs/forecasts.md), and the path its likely range is built around. `trend` stays the API's default (the seed's).
PAGE_METHOD = "anchored"
# The likely range's level: any in between is accepted; the page offers these (make evaluate measures them).
MIN_LEVEL, MAX_LEVEL, PAGE_LEVELS = 0.5, 0.95, (0.8, 0.9)
# Yahoo tickers (BRK-B, ^GSPC, 0700.HK, EURUSD=X, ES=F), ASCII only, a caret only in front; checked
# before upper-casing, so what the schema allows is exactly what is accepted. Spaces and tabs are
# spelled out: regex engines disagree on what \s matches.
TICKER_PATTERN = r"^[ \t]*\^?[A-Za-z0-9][A-Za-z0-9.=\-]{0,%d}[ \t]*$" % (MAX_SYMBOL_LENGTH - 1)
# The pattern in words, as the API's refusal and the page's form both say it.
TICKER_RULE = f"use letters, digits and . - = (and ^ in front for an index), at most {MAX_SYMBOL_LENGTH} characters"

Ticker = Annotated[str, Field(pattern=TICKER_PATTERN, max_length=MAX_SYMBOL_LENGTH + 8,
                              description="A ticker; trimmed and upper-cased, duplicates collapse"),
                   AfterValidator(lambda raw: raw.strip().upper())]


class InvalidRequestError(Exception):
    """A request that is refused with 400; the message says what is wrong with it."""


class TrendsRequest(BaseModel):
    """What /get_trends and /api/analyses take."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    symbols: list[Ticker] = Field(min_length=1)
    window: int = Field(20, ge=1, le=MAX_WINDOW, description="moving-average days")
    horizon: int = Field(5, ge=1, le=MAX_HORIZON, description="trading days to forecast")
    method: Literal[tuple(METHODS)] = Field(
        "trend", description="; ".join(f"{name}: {meaning}" for name, meaning in METHODS.items()))
    # Rounded to hundredths: levels that print alike are one job (its id holds the level).
    level: Annotated[float, AfterValidator(lambda raw: round(raw, 2))] = Field(
        DEFAULT_LEVEL, ge=MIN_LEVEL, le=MAX_LEVEL,
        description="the share of outcomes the likely range is to hold (0.8: an 80 % range), rounded to hundredths")

    def distinct_symbols(self) -> list[str]:
        """List the symbols in request order, each once."""
        return list(dict.fromkeys(self.symbols))


@functools.lru_cache(maxsize=4)
def request_model(max_symbols: int) -> type[TrendsRequest]:
    """TrendsRequest with this deployment's MAX_SYMBOLS as the most items `symbols` may have."""
    return create_model("TrendsRequest", __base__=TrendsRequest,
                        symbols=(list[Ticker], Field(min_length=1, max_length=max_symbols)))


def parse_trends_request(body: bytes, max_symbols: int) -> TrendsRequest:
    """Parse and validate a JSON body; raise InvalidRequestError naming every problem, in JSON's words."""
    try:
        request = request_model(max_symbols).model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequestError("; ".join(_described(error) for error in exc.errors()[:5])) from None
    return request.model_copy(update={"symbols": request.distinct_symbols()})


def _described(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        return f'the body is not valid JSON ({error["ctx"]["error"]}); send {{"symbols": ["AAPL", "MSFT"]}}'
    where = "".join(f"[{part}]" if isinstance(part, int) else f'"{part}"' for part in error["loc"]) or "the body"
    if error["type"] == "string_pattern_mismatch":  # the only pattern is the ticker's
        return f"{where} is not a ticker: {TICKER_RULE}, not {_shown(error['input'])}"
    message = f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}"
    if error["type"] != "missing" and "input" in error:
        message += f", not {_shown(error['input'])}"
    return message


def _shown(value: object) -> str:
    """User input as JSON (null, true, "text"), cut short for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
