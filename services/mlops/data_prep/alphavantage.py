"""Alpha Vantage daily bars: one ``TIME_SERIES_DAILY`` request per symbol, fetched incrementally.

Indicators are computed locally (``features.py``), so a symbol costs one request a day,
not five: the free tier allows about 25 requests a day.

For each symbol:

1. the bars stored by earlier runs are read from ``raw/alphavantage/<SYMBOL>/bars.parquet``;
2. when trading days (weekdays) are missing after the last stored day, up to ``until``
   (the stage's ``--as-of``, or today), one request is sent: ``outputsize=compact`` (the
   latest 100 bars) when fewer than 100 are missing, ``full`` otherwise or when nothing
   is stored yet; nothing is requested when the stored bars are already up to date, nor
   (the fetch budget, below) when the symbol was fetched today already or is stale;
3. every answer is archived exactly as received, *before* it is parsed, under
   ``raw/alphavantage/<SYMBOL>/responses/<UTC fetch time>-<attempt>.json`` (a key is never
   written twice);
4. the answer is parsed and merged into the stored bars (the new answer wins for a day
   both hold), which are written back in one atomic put.

Alpha Vantage reports errors with HTTP 200 and a one-key body, told apart by their text:

* an invalid, missing or demo API key (``{"Error Message": "the parameter apikey is
  invalid or missing..."}`` or an ``Information`` about the key): the run stops at once
  with a ``ConfigError`` (exit 2) naming ``ALPHAVANTAGE_API_KEY``; nothing is published;
* ``{"Error Message": ...}`` otherwise: unknown symbol. It is logged and skipped; its
  stored history, if any, is kept in the dataset (it turns stale), the others go on;
* a rate limit per minute (``{"Information"|"Note": "...call frequency ... per minute..."}``):
  retried with exponential backoff (``ALPHAVANTAGE_RETRY_WAIT_SECONDS``, doubling, at most
  120 s, ``ALPHAVANTAGE_MAX_ATTEMPTS`` attempts in all), then that symbol fails;
* a rate limit per day (``{"Information": "... 25 requests per day ..."}``): it cannot
  clear during the run, so it is not retried: fetching stops for the run, with one
  warning; the symbols not fetched keep their stored bars (they may turn stale), those
  without any are skipped, and what was fetched is published if the quality gate allows;
* a premium-only answer (``outputsize=full`` or the endpoint needs a paid plan): not
  retried; when the full history was asked, the latest 100 bars (``compact``) are asked
  instead, with a warning; otherwise that symbol fails;
* any other body without ``"Time Series (Daily)"``: that symbol fails.

Timeouts (``ALPHAVANTAGE_CONNECT_TIMEOUT_SECONDS`` to connect,
``ALPHAVANTAGE_TIMEOUT_SECONDS`` for the answer), dropped connections, HTTP 429 and 5xx
are retried the same way. Every symbol is tried; when one failed (other than an unknown
symbol), the load ends with one ``DataError`` naming them, so nothing is published from
an incomplete fetch. What was fetched is already stored, so a rerun only asks for the
rest, and stored history is never dropped because a fetch failed.
All values arrive as strings; one that is not a number becomes a missing value, which the
quality gate quarantines (never a zero).

The fetch budget (the free tier allows about 25 requests a day): after each request the
symbol's *fetch log* (``raw/alphavantage/<SYMBOL>/fetch.json``) records the day (UTC) and
the outcome (``bars``: new bars; ``no new bar``; ``unknown symbol``; ``failed``; ``daily
limit``). A symbol fetched today with an answer (new bars, none, or unknown) is not asked
again today: a rerun makes no request. A symbol whose newest bar was more than
``STALE_AFTER_DAYS`` trading days old when it was last fetched (delisted, or suspended) is
stale: it is asked again at most once a week (``STALE_REFETCH_DAYS``), with ``compact``;
the stage reports it in ``stale_symbols``. The result counts the requests a run made
(``requests``, retries included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from mlops.contracts import keys
from mlops.data_prep.bars import BAR_COLUMNS, canonicalize
from mlops.data_prep.fetch import FetchReport
from mlops.errors import ConfigError, DataError
from mlops.settings import Settings
from mlops.store import ObjectStore, get_json, get_parquet, put_json, put_parquet

log = logging.getLogger(__name__)

FUNCTION = "TIME_SERIES_DAILY"
SERIES_KEY = "Time Series (Daily)"
VALUE_KEYS = {
    "1. open": "open",
    "2. high": "high",
    "3. low": "low",
    "4. close": "close",
    "5. volume": "volume",
}
COMPACT_BARS = 100  # what outputsize=compact returns
STALE_REFETCH_DAYS = 7  # a stale symbol is asked again at most this often
ANSWERED = {"bars", "no new bar", "unknown symbol"}  # outcomes that hold for the whole day
MAX_WAIT_SECONDS = 120.0
MESSAGE_CHARS = 160


class AlphaVantageError(DataError):
    """One symbol could not be fetched from Alpha Vantage."""


class UnknownSymbol(AlphaVantageError):
    """Alpha Vantage answered ``{"Error Message": ...}``: it does not know the symbol."""


class PremiumOnly(AlphaVantageError):
    """Alpha Vantage answered that the request needs a premium plan."""


class DailyLimit(AlphaVantageError):
    """Alpha Vantage answered that the key's requests for the day are used up."""


class InvalidApiKey(ConfigError):
    """Alpha Vantage refused the API key: every request would fail, so the run stops."""


class _Retryable(Exception):
    """A rate limit, timeout, dropped connection or server error: worth another try."""


def _about_key(text: str) -> bool:
    lowered = text.lower()
    names_key = "apikey" in lowered or "api key" in lowered
    return names_key and any(w in lowered for w in ("invalid", "missing", "demo", "claim"))


def _rate_limit(text: str) -> bool:
    lowered = text.lower()
    return any(
        w in lowered
        for w in (
            "rate limit",
            "call frequency",
            "per minute",
            "per second",
            "per day",
            "burst",
            "requests per",
            "more sparingly",
        )
    )


def _per_day(text: str) -> bool:
    """A limit of requests per day (not per minute or second): it will not clear soon."""
    lowered = text.lower()
    return "per day" in lowered and not any(
        w in lowered for w in ("per minute", "per second", "call frequency", "burst")
    )


def _refused_key(symbol: str, text: object) -> InvalidApiKey:
    return InvalidApiKey(
        f"Alpha Vantage refused ALPHAVANTAGE_API_KEY (asked for {symbol}: {_short(text)}): set "
        "a valid key (https://www.alphavantage.co/support/#api-key); nothing was published."
    )


bars_key = keys.raw_bars_key
responses_prefix = keys.raw_responses_prefix


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def _raise_notice(symbol: str, text: str) -> None:
    """An ``Information`` or ``Note`` body: a refused key, a rate limit or a premium-only answer."""
    if _about_key(text):
        raise _refused_key(symbol, text)
    if _rate_limit(text):
        if _per_day(text):
            raise DailyLimit(f"Alpha Vantage's daily request limit is reached: {_short(text)}")
        raise _Retryable(f"rate limit notice {_short(text)!r}")
    if "premium" in text.lower():
        raise PremiumOnly(f"Alpha Vantage answers {symbol} only on a premium plan: {_short(text)}")
    raise _Retryable(f"notice {_short(text)!r}")


def parse_daily(payload: object, symbol: str) -> pd.DataFrame:
    """Bars of one ``TIME_SERIES_DAILY`` answer in the canonical layout."""
    if not isinstance(payload, dict):
        raise AlphaVantageError(f"Alpha Vantage answered for {symbol} with JSON that is no object")
    if "Error Message" in payload:
        message = str(payload["Error Message"])
        if _about_key(message):
            raise _refused_key(symbol, message)
        raise UnknownSymbol(f"Alpha Vantage does not know symbol {symbol}: {_short(message)}")
    series = payload.get(SERIES_KEY)
    if series is None:
        for key in ("Information", "Note"):
            if key in payload:
                _raise_notice(symbol, str(payload[key]))
        keys = ", ".join(map(str, payload)) or "none"
        raise AlphaVantageError(
            f"Alpha Vantage's answer for {symbol} has no {SERIES_KEY!r} (its keys: {keys})"
        )
    if not isinstance(series, dict):
        raise AlphaVantageError(f"Alpha Vantage's {SERIES_KEY!r} for {symbol} is not an object")
    records = []
    for day, values in series.items():
        values = values if isinstance(values, dict) else {}
        record = {"date": day, "symbol": symbol}
        record.update({ours: values.get(theirs) for theirs, ours in VALUE_KEYS.items()})
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=BAR_COLUMNS)
    return canonicalize(frame, source=f"Alpha Vantage's answer for {symbol}")


class AlphaVantageClient:
    """``TIME_SERIES_DAILY`` over HTTP with bounded retries; archives every answer."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        store: ObjectStore,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_attempts: int = 4,
        retry_wait: float = 15.0,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] | None = None,
        stale_after_days: int = 5,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.store = store
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.retry_wait = retry_wait
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "mlops-data-prep")
        self.clock = clock or now
        self.stale_after_days = stale_after_days
        self.requests = 0  # sent by this client, retries included
        # urllib3 logs each request's URL, API key included, at DEBUG.
        pool_log = logging.getLogger("urllib3.connectionpool")
        if pool_log.getEffectiveLevel() < logging.INFO:
            pool_log.setLevel(logging.INFO)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ObjectStore, session: requests.Session | None = None
    ) -> AlphaVantageClient:
        key = settings.alphavantage_api_key
        if key is None or not key.get_secret_value().strip():
            raise DataError("ALPHAVANTAGE_API_KEY must be set when DATA_SOURCE=alphavantage.")
        return cls(
            base_url=settings.alphavantage_base_url,
            api_key=key.get_secret_value().strip(),
            store=store,
            timeout=settings.alphavantage_timeout_seconds,
            connect_timeout=settings.alphavantage_connect_timeout_seconds,
            max_attempts=settings.alphavantage_max_attempts,
            retry_wait=settings.alphavantage_retry_wait_seconds,
            session=session,
            stale_after_days=settings.stale_after_days,
        )

    def today(self) -> date:
        """The day (UTC) requests are counted on: Alpha Vantage's free tier is per day."""
        return self.clock().astimezone(UTC).date()

    def close(self) -> None:
        self.session.close()

    def daily(self, symbol: str, outputsize: str) -> pd.DataFrame:
        """All bars of one answer; retries what is worth retrying, then fails clearly."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.retry_wait, max=MAX_WAIT_SECONDS),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "Alpha Vantage, %s: %s; attempt %d of %d, retrying in %.1f s",
                symbol,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
                self.max_attempts,
                state.next_action.sleep if state.next_action else 0.0,
            ),
        )
        bars: pd.DataFrame | None = None
        try:
            for attempt in retrying:
                with attempt:
                    bars = self._once(symbol, outputsize, attempt.retry_state.attempt_number)
        except _Retryable as exc:
            raise AlphaVantageError(
                f"{symbol} still failed after {self.max_attempts} attempts: {exc}"
            ) from None
        assert bars is not None
        return bars

    def _once(self, symbol: str, outputsize: str, attempt: int) -> pd.DataFrame:
        params = {
            "function": FUNCTION,
            "symbol": symbol,
            "outputsize": outputsize,
            "datatype": "json",
            "apikey": self.api_key,
        }
        self.requests += 1
        try:
            response = self.session.get(
                self.base_url, params=params, timeout=(self.connect_timeout, self.timeout)
            )
        except requests.Timeout:
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _Retryable(f"the connection failed ({self._scrub(exc)})") from None
        except requests.RequestException as exc:
            reason = self._scrub(exc)
            raise AlphaVantageError(f"the request for {symbol} failed: {reason}") from None
        self._archive(symbol, response, attempt)  # before anything is parsed
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status != 200:
            raise AlphaVantageError(f"Alpha Vantage answered HTTP {status} for {symbol}")
        try:
            payload = response.json()
        except ValueError:
            raise _Retryable("the answer is not JSON") from None
        return parse_daily(payload, symbol)

    def _archive(self, symbol: str, response: requests.Response, attempt: int) -> None:
        stamp = self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        ok = response.status_code == 200
        suffix = ".json" if ok else f"-http{response.status_code}.txt"
        base = f"{responses_prefix(symbol)}{stamp}-{attempt}"
        key, n = f"{base}{suffix}", 1
        while self.store.exists(key):  # immutable: never overwrite an archived answer
            key, n = f"{base}.{n}{suffix}", n + 1
        content_type = "application/json" if ok else "text/plain"
        self.store.put_bytes(key, response.content, content_type)

    def _scrub(self, exc: BaseException) -> str:
        """The error's cause without the request URL (its query holds the API key)."""
        text = str(exc)
        if "Caused by " in text:
            text = text.split("Caused by ", 1)[1].rstrip(")")
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return _short(text) or type(exc).__name__


def now() -> datetime:
    """The current time (UTC): the fetch day and the archive's stamps."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class FetchLog:
    """The last request for one symbol: its day (UTC), outcome and newest stored bar."""

    day: str
    outcome: str  # "bars", "no new bar", "unknown symbol", "failed", "daily limit"
    last_bar: str | None = None

    @staticmethod
    def read(store: ObjectStore, symbol: str) -> FetchLog | None:
        key = keys.raw_fetch_log_key(symbol)
        if not store.exists(key):
            return None
        payload = get_json(store, key)
        return FetchLog(str(payload["day"]), str(payload["outcome"]), payload.get("last_bar"))

    def write(self, store: ObjectStore, symbol: str) -> None:
        put_json(store, keys.raw_fetch_log_key(symbol), asdict(self))

    def stale(self, stale_after_days: int) -> bool:
        """Its newest stored bar was more than ``stale_after_days`` trading days old when it
        was fetched (and answered: no new bar, or unknown now, as a delisted symbol is)."""
        if self.outcome not in ANSWERED or self.last_bar is None:
            return False
        fetched, last = date.fromisoformat(self.day), date.fromisoformat(self.last_bar)
        return missing_trading_days(last, fetched) > stale_after_days


def _no_request(client: AlphaVantageClient, symbol: str, stored: pd.DataFrame | None) -> str:
    """Why ``symbol`` is not asked for today (the fetch budget), or "" when it may be."""
    last = FetchLog.read(client.store, symbol)
    if last is None or (stored is None and last.outcome != "unknown symbol"):
        return ""
    today = client.today()
    if last.day == today.isoformat() and last.outcome in ANSWERED:
        return f"it was fetched today already ({last.outcome})"
    next_day = date.fromisoformat(last.day) + timedelta(days=STALE_REFETCH_DAYS)
    if last.stale(client.stale_after_days) and today < next_day:
        return (
            f"it is stale (its newest bar, {last.last_bar}, was more than "
            f"{client.stale_after_days} trading days old on {last.day}): it is asked again "
            f"once a week, next on {next_day}"
        )
    return ""


def missing_trading_days(last: date, until: date) -> int:
    """Weekdays after ``last`` up to and including ``until``."""
    return int(np.busday_count(last + timedelta(days=1), until + timedelta(days=1)))


def update_symbol(client: AlphaVantageClient, symbol: str, until: date) -> pd.DataFrame:
    """The symbol's stored bars, brought up to ``until`` with at most one request (none
    when they reach it, or when the fetch budget says so: see the module doc)."""
    store = client.store
    key = bars_key(symbol)
    stored = get_parquet(store, key) if store.exists(key) else None
    known = stored["date"].dropna() if stored is not None else pd.Series(dtype="datetime64[ns]")
    last = None if known.empty else known.max().date()
    if last is None:
        outputsize = "full"
    else:
        missing = missing_trading_days(last, until)
        if missing <= 0:
            log.info("Alpha Vantage, %s: stored bars reach %s, nothing to fetch", symbol, last)
            return stored
        outputsize = "compact" if missing < COMPACT_BARS else "full"
    why = _no_request(client, symbol, None if last is None else stored)
    if why:
        log.info("Alpha Vantage, %s: no request, %s; its stored bars are used", symbol, why)
        if stored is None or last is None:  # Alpha Vantage did not know it today
            raise UnknownSymbol(f"Alpha Vantage did not know symbol {symbol} today")
        return stored
    logged = FetchLog.read(store, symbol)
    if logged is not None and logged.stale(client.stale_after_days):
        outputsize = "compact"  # a weekly look for a new bar: the latest 100 are enough
    fresh = _fetch(client, symbol, outputsize, last)
    # The new answer wins for a day both hold (an empty frame would spoil the dtypes).
    kept = stored[~stored["date"].isin(fresh["date"])] if stored is not None else fresh.iloc[:0]
    merged = pd.concat([kept, fresh], ignore_index=True) if len(kept) else fresh
    merged = merged.sort_values("date", na_position="last").reset_index(drop=True)
    put_parquet(store, key, merged)
    newest = merged["date"].dropna().max()
    newest_day = None if pd.isna(newest) else newest.date()
    found = newest_day is not None and (last is None or newest_day > last)
    outcome = "bars" if found else "no new bar"
    FetchLog(client.today().isoformat(), outcome, _iso(newest_day)).write(store, symbol)
    log.info(
        "Alpha Vantage, %s: %d bars received (%s), %d stored",
        symbol,
        len(fresh),
        outputsize,
        len(merged),
    )
    return merged


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _fetch(
    client: AlphaVantageClient, symbol: str, outputsize: str, last: date | None
) -> pd.DataFrame:
    """One answer (the latest 100 bars when the full history is premium-only); a failure
    is written to the symbol's fetch log before it is raised."""
    try:
        try:
            return client.daily(symbol, outputsize)
        except PremiumOnly as exc:
            if outputsize != "full":
                raise
            log.warning("%s; asking for the latest %d bars (compact) instead", exc, COMPACT_BARS)
            return client.daily(symbol, "compact")
    except AlphaVantageError as exc:
        outcome = (
            "unknown symbol"
            if isinstance(exc, UnknownSymbol)
            else "daily limit"
            if isinstance(exc, DailyLimit)
            else "failed"
        )
        FetchLog(client.today().isoformat(), outcome, _iso(last)).write(client.store, symbol)
        raise


def iter_alphavantage(
    settings: Settings,
    store: ObjectStore,
    symbols: Iterable[str],
    *,
    until: object = None,
    session: requests.Session | None = None,
    unknown: dict[str, str] | None = None,
    report: FetchReport | None = None,
) -> Iterator[pd.DataFrame]:
    """Each symbol's bars, one symbol per frame, fetched incrementally (see the module doc).

    ``unknown``, when given, receives the symbols that are skipped (Alpha Vantage does not
    know them, or they were not fetched after the daily limit, and have no stored bars),
    each with why; ``report`` the number of requests and the symbols not fetched.
    """
    symbols = list(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
    end = _as_date(until) or now().date()
    client = AlphaVantageClient.from_settings(settings, store, session=session)
    report = report if report is not None else FetchReport()
    skipped = unknown if unknown is not None else {}
    failures: list[str] = []
    limit: DailyLimit | None = None
    try:
        for symbol in symbols:
            if limit is not None:
                report.not_fetched.append(symbol)
                bars = _stored(store, symbol)
                if bars.empty:
                    skipped[symbol] = "not fetched: Alpha Vantage's daily request limit"
                    continue
            else:
                try:
                    bars = _update_or_stored(client, symbol, end, skipped)
                except DailyLimit as exc:
                    limit = exc
                    report.not_fetched.append(symbol)
                    bars = _stored(store, symbol)
                    if bars.empty:
                        skipped[symbol] = "not fetched: Alpha Vantage's daily request limit"
                        continue
                except AlphaVantageError as exc:
                    log.error("Alpha Vantage, %s: %s", symbol, exc)
                    failures.append(str(exc) if symbol in str(exc) else f"{symbol}: {exc}")
                    continue
            if not bars.empty:
                yield bars
    finally:
        client.close()
        report.requests += client.requests
    if limit is not None:
        _warn_daily_limit(limit, report, skipped)
    if failures:
        raise DataError(
            f"Alpha Vantage failed for {len(failures)} of {len(symbols)} symbols "
            f"({'; '.join(failures)}); what was fetched is stored, nothing was published, "
            "run it again later."
        )


def _update_or_stored(
    client: AlphaVantageClient, symbol: str, end: date, skipped: dict[str, str]
) -> pd.DataFrame:
    """``update_symbol``; for a symbol Alpha Vantage does not know, its stored bars (empty,
    and the symbol in ``skipped``, when there are none)."""
    try:
        return update_symbol(client, symbol, end)
    except UnknownSymbol as exc:
        bars = _stored(client.store, symbol)
        if bars.empty:
            log.warning("%s; it is skipped.", exc)
            skipped[symbol] = "Alpha Vantage does not know it"
            return bars
        log.warning(
            "%s; its %d stored bars (to %s) are kept, it will turn stale.",
            exc,
            len(bars),
            bars["date"].max().date(),
        )
        return bars


def _warn_daily_limit(limit: DailyLimit, report: FetchReport, skipped: dict[str, str]) -> None:
    """The one sentence of a run that met the daily request limit."""
    missed = report.not_fetched
    without = [s for s in missed if s in skipped]
    log.warning(
        "%s; fetching stopped after %d requests: %d symbols were not fetched (%s), %s; what "
        "was fetched is stored and published if the quality gate allows.",
        limit,
        report.requests,
        len(missed),
        ", ".join(missed[:20]) + (", ..." if len(missed) > 20 else ""),
        (
            f"{len(without)} of them without stored bars (skipped: {', '.join(without[:20])})"
            if without
            else "their stored bars are used"
        ),
    )


def _stored(store: ObjectStore, symbol: str) -> pd.DataFrame:
    """The bars stored for ``symbol`` by earlier runs (empty when none)."""
    key = bars_key(symbol)
    if not store.exists(key):
        return pd.DataFrame(columns=BAR_COLUMNS)
    return get_parquet(store, key)


def load_alphavantage(
    settings: Settings,
    store: ObjectStore | None = None,
    *,
    until: object = None,
    session: requests.Session | None = None,
) -> pd.DataFrame:
    """Bars of every symbol in ``SYMBOLS`` in the canonical layout (see the module doc)."""
    if store is None:
        from mlops.store import open_store

        store = open_store(settings)
    frames = list(
        iter_alphavantage(settings, store, settings.symbol_list, until=until, session=session)
    )
    if not frames:
        raise DataError("Alpha Vantage returned no bars for any symbol in SYMBOLS.")
    return pd.concat(frames, ignore_index=True)


def _as_date(value: object) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()
