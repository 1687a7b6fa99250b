"""Market or limit orders (``TRADE_ORDER_TYPE``): the limit price, and where a session
fills a limit order.

One rule for the built-in paper broker and the backtest (:mod:`mlops.trading.simulation`),
so a limit the backtest fills is the limit the paper broker fills:

* the limit is the decision day's close moved by ``TRADE_LIMIT_BUFFER_BPS``: a buy at
  close x (1 + buffer), a sell at close x (1 - buffer), rounded to the tick Alpaca takes
  (cents from $1, hundredths of a cent below);
* the next session fills it at its open when the open is already through the limit (a
  buy opening at or below it, a sell at or above it); otherwise at the limit itself when
  the session's range reaches it (low <= limit for a buy, high >= limit for a sell), which
  an order good for the opening auction only (``opg``) never gets; otherwise it does not
  fill, and the order expires with the session.

A market order fills at the open (:func:`fill_reference` says so too), so callers treat
both alike.
"""

from __future__ import annotations

import math

from mlops.settings import Settings

MARKET = "market"
LIMIT = "limit"
BUY = "buy"


def tick(price: float) -> float:
    """``price`` on the tick a US equity limit takes: cents from $1, 1/100 cent below."""
    return round(price, 2 if price >= 1 else 4)


def limit_price(side: str, close: float, buffer_bps: float) -> float:
    """The limit of an order decided on ``close``: past it by the buffer, against the order
    (a buy pays at most close x (1 + buffer), a sell takes at least close x (1 - buffer))."""
    if not math.isfinite(close) or close <= 0:
        raise ValueError(f"a limit price needs the decision day's close, got {close!r}")
    shift = buffer_bps / 10_000
    return tick(close * (1 + shift if side == BUY else 1 - shift))


def limit_for(settings: Settings, side: str, close: float | None) -> float | None:
    """The order's limit under the settings; None for a market order."""
    if settings.trade_order_type != LIMIT:
        return None
    return limit_price(side, math.nan if close is None else close, settings.trade_limit_buffer_bps)


def fill_reference(
    side: str,
    limit: float | None,
    open_: float,
    high: float,
    low: float,
    *,
    opening_only: bool = False,
) -> float | None:
    """The price the session offers the order (see the module); None: it does not fill.

    ``limit`` None is a market order: the open. ``opening_only``: good for the opening
    auction only (``opg``), so a limit fills at the open or not at all. A missing bar
    (NaN) fills nothing.
    """
    if math.isnan(open_):
        return None
    if limit is None:
        return open_
    buying = side == BUY
    if (open_ <= limit) if buying else (open_ >= limit):
        return open_
    if opening_only:
        return None
    if (low <= limit) if buying else (high >= limit):
        return limit
    return None


def not_reached(
    side: str, limit: float, open_: float, high: float, low: float, *, opening_only: bool = False
) -> str:
    """Why a limit did not fill, in a few words (the expired order's error)."""
    if opening_only:
        return f"{side} limit {limit:g} not reached at the open ({open_:g}; opg)"
    if side == BUY:
        return f"buy limit {limit:g} not reached (open {open_:g}, low {low:g})"
    return f"sell limit {limit:g} not reached (open {open_:g}, high {high:g})"
