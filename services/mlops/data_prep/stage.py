"""``mlops data-prep``: bars in, checked features out, as one immutable dataset version.

Symbol by symbol (memory bounded by the largest symbol and one part, see ``sources`` and
``dataset.PartWriter``): read, quality gate per row, adjustment by an adjusted close,
series breaks (gaps, splits, jumps), features, staged part on local disk. After the last
symbol the batch-wide checks run (share of bad rows, stale symbols); only when they pass
do the parts, the quarantine file and the manifest reach the store, the manifest last. A
batch refused for its share of bad rows leaves only those rows, in a file the error
sentence names.

The result (and the manifest) lists what did not make it into the dataset: quarantined
rows (this run's, with the keys of the files holding them, even when the same dataset was
published before), stale symbols, and skipped symbols with why (not in the source,
unknown to Alpha Vantage, no bar on or before the as-of day, every bar quarantined).

Sharded (``DATA_PREP_SHARDS`` > 1, index from ``JOB_COMPLETION_INDEX``): each shard does
the above for its own symbols and publishes a shard manifest; the shard that completes
the set (or ``mlops data-prep --finalize --as-of D``) combines them into one dataset.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlops import market_calendar
from mlops.context import Context
from mlops.contracts.columns import OHLCV
from mlops.contracts.datasets import Manifest
from mlops.data_prep import background, dataset
from mlops.data_prep.dataset import (
    MAX_FLAGS,
    PART_ROWS,
    Columns,
    Contents,
    PartWriter,
    StagedPart,
)
from mlops.data_prep.features import batch_features
from mlops.data_prep.fetch import FetchReport
from mlops.data_prep.quality import QualityFlag, QualityGate, SymbolCheck, stale_symbols
from mlops.data_prep.shards import Shard
from mlops.data_prep.sources import iter_bars
from mlops.errors import ConfigError, DataError
from mlops.settings import Settings
from mlops.store import ObjectStore

log = logging.getLogger(__name__)

BATCH_ROWS = 100_000  # rows checked and featurized at a time (many symbols at once)


@dataclass
class DataPrepResult:
    version: str | None  # None: a shard whose siblings have not all published yet
    as_of: date
    rows: int
    symbols: list[str]
    quarantined: int
    new: bool
    shard: str = "0-of-1"
    stale_symbols: list[str] = field(default_factory=list)
    quality_flags: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase; _cpu: CPU
    market_closed: str | None = None  # why nothing was published: not a trading session
    skipped_symbols: dict[str, str] = field(default_factory=dict)  # symbol: why
    adjusted_symbols: list[str] = field(default_factory=list)  # on their adjusted close
    quarantine_keys: list[str] = field(default_factory=list)  # this run's quarantined rows
    requests: int = 0  # sent to Alpha Vantage by this run (retries included)
    bars: str = OHLCV  # what the dataset's bars hold: ohlcv or close_only (DATA_BARS)


@dataclass
class Prepared:
    """One shard's checked features and quarantine, staged on local disk."""

    as_of: date
    parts: list[StagedPart]
    quarantine: list[StagedPart]
    rows_read: int
    quarantined_rows: int
    stale_symbols: list[str]
    flags: list[QualityFlag]
    timings: dict[str, float]
    skipped_symbols: dict[str, str] = field(default_factory=dict)
    adjusted_symbols: list[str] = field(default_factory=list)
    requests: int = 0  # to Alpha Vantage
    bars: str = OHLCV  # DATA_BARS


class _Timer:
    """Seconds per phase: wall (``name``) and CPU (``name_cpu``) of this thread; the CPU of
    the reads ahead and writes behind (``background``) is added to ``read`` and ``write``
    by ``add_thread_cpu``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._threads = background.thread_cpu()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - began
            self.seconds[f"{name}_cpu"] += time.thread_time() - cpu

    def add_thread_cpu(self) -> None:
        for kind, seconds in background.thread_cpu().items():
            self.seconds[f"{kind}_cpu"] += seconds - self._threads.get(kind, 0.0)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def run(ctx: Context, as_of: date | None = None, *, finalize: bool = False) -> DataPrepResult:
    """Load, check, featurize and publish the bars known on ``as_of`` (default: all)."""
    if as_of is not None and (
        closed := market_calendar.closed_day(as_of, "no dataset is published for it")
    ):
        return DataPrepResult(None, as_of, 0, [], 0, False, market_closed=closed)
    settings = ctx.settings
    shard = Shard.from_settings(settings)
    if finalize:
        return _finalize(ctx, as_of, shard.count)
    if shard.count > 1 and as_of is None:
        raise ConfigError(
            f"With DATA_PREP_SHARDS={shard.count} every shard needs the same --as-of, so "
            "that their parts form one dataset."
        )
    began, cpu = time.perf_counter(), time.process_time()
    timer = _Timer()
    with tempfile.TemporaryDirectory(prefix="mlops-data-prep-") as folder:
        prepared = prepare(settings, ctx.store, shard, as_of, Path(folder))
        if shard.count == 1:
            manifest, new, quality = _publish_dataset(ctx, prepared, timer)
        else:
            with timer("publish"):
                shard_manifest = dataset.publish_shard(
                    ctx.store,
                    prepared.parts,
                    prepared.quarantine,
                    as_of=prepared.as_of,
                    index=shard.index,
                    count=shard.count,
                    source=settings.data_source,
                    quality=_quality(prepared),
                )
    timings = {**prepared.timings, **timer.rounded()}
    timings["total"] = round(time.perf_counter() - began, 3)
    timings["total_cpu"] = round(time.process_time() - cpu, 3)
    if shard.count == 1:
        _log_dataset(manifest, new, quality, timings)
        result = _result(manifest, new, quality, shard.name, timings)
    else:
        result = _shard_published(ctx, shard, prepared.as_of, shard_manifest, timings)
    result.requests = prepared.requests
    return result


def _publish_dataset(
    ctx: Context, prepared: Prepared, timer: _Timer
) -> tuple[Manifest, bool, Contents]:
    """Publish an unsharded run's parts as one dataset, unless every symbol is stale.

    Also returns what this run found (its quarantine and its keys, flags, stale, skipped
    and adjusted symbols), which the manifest of a dataset published before may not say.
    """
    _refuse_all_stale(
        {s for p in prepared.parts for s in p.symbols},
        prepared.stale_symbols,
        max((p.last_date for p in prepared.parts), default="?"),
        prepared.as_of,
        ctx.settings,
    )
    quality = _quality(prepared)
    with timer("publish"):
        manifest, new, quarantine_keys = dataset.publish_staged(
            ctx.store,
            ctx.engine,
            prepared.parts,
            prepared.quarantine,
            as_of=prepared.as_of,
            source=ctx.settings.data_source,
            quality=quality,
        )
    return manifest, new, replace(quality, quarantine_keys=quarantine_keys)


def _shard_published(
    ctx: Context,
    shard: Shard,
    as_of: date,
    shard_manifest: dataset.ShardManifest,
    timings: dict[str, float],
) -> DataPrepResult:
    """After one shard published: finalize when it completed the set, else report it."""
    contents = shard_manifest.contents
    log.info(
        "Shard %s for %s: %d rows, %d symbols, %d rows quarantined, %d stale",
        shard.name,
        as_of,
        contents.rows,
        len(contents.symbols),
        contents.quarantined_rows,
        len(contents.stale_symbols),
    )
    waiting = dataset.missing_shards(ctx.store, as_of, shard.count)
    if not waiting:  # this shard completed the set
        result = _finalize(ctx, as_of, shard.count)
        result.shard, result.timings = shard.name, timings
        return result
    log.info("Waiting for shards %s before the dataset is finalized.", waiting)
    return DataPrepResult(
        version=None,
        as_of=as_of,
        rows=contents.rows,
        symbols=contents.symbols,
        quarantined=contents.quarantined_rows,
        new=False,
        shard=shard.name,
        stale_symbols=contents.stale_symbols,
        quality_flags=contents.quality_flag_count,
        timings=timings,
        skipped_symbols=contents.skipped_symbols,
        adjusted_symbols=contents.adjusted_symbols,
        quarantine_keys=contents.quarantine_keys,
        bars=contents.bars,
    )


@dataclass
class _Staging:
    """Local part writers and what the loop over the source has learnt so far."""

    parts: PartWriter
    quarantine: PartWriter
    last_days: dict[str, date] = field(default_factory=dict)
    flags: list[QualityFlag] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # symbol: why it has no row
    adjusted: set[str] = field(default_factory=set)


def today() -> date:
    """Today (UTC, a few hours ahead of New York: never rejects the day's own bars)."""
    return datetime.now(UTC).date()


def prepare(
    settings: Settings,
    store: ObjectStore,
    shard: Shard,
    as_of: date | None,
    folder: Path,
    *,
    now: date | None = None,
) -> Prepared:
    """Read, check and featurize this shard's symbols, a batch at a time, into local parts.

    Bars after today are quarantined (a typo or a bad feed). With ``as_of`` in the past,
    bars after it and up to today were not known yet on that day: they are left out, so a
    replay of a day sees what that day saw.
    """
    latest = pd.Timestamp(now or today())
    gate = QualityGate(
        max_bad_share=settings.quality_max_bad_share,
        max_gap_days=settings.quality_max_gap_days,
        max_jump_factor=settings.quality_max_jump_factor,
        latest=latest,
    )
    staging = _Staging(PartWriter(folder, PART_ROWS), PartWriter(folder, PART_ROWS, "quarantine"))
    timer = _Timer()
    fetch = FetchReport()
    frames = iter_bars(
        settings,
        store,
        shard=shard,
        as_of=as_of,
        skipped=staging.skipped,
        batch_rows=BATCH_ROWS,
        fetch=fetch,
    )
    _stage_all(frames, gate, staging, timer, as_of, latest)
    effective = _check_totals(gate, staging, shard, as_of, store, latest.date())
    stale = stale_symbols(staging.last_days, effective, settings.stale_after_days)
    for symbol in staging.last_days:
        staging.skipped.pop(symbol, None)  # rows of its own after all (another frame)
    _warn(stale, staging, effective, settings.stale_after_days)
    with timer("write"):
        staged, staged_quarantine = staging.parts.close(), staging.quarantine.close()
    timer.add_thread_cpu()
    return Prepared(
        as_of=effective,
        parts=staged,
        quarantine=staged_quarantine,
        rows_read=gate.total_rows,
        quarantined_rows=gate.bad_rows,
        stale_symbols=stale,
        flags=staging.flags,
        timings=timer.rounded(),
        skipped_symbols=dict(sorted(staging.skipped.items())),
        adjusted_symbols=sorted(staging.adjusted),
        requests=fetch.requests,
        bars=settings.data_bars,
    )


def _stage_all(
    frames: Iterator[pd.DataFrame],
    gate: QualityGate,
    staging: _Staging,
    timer: _Timer,
    as_of: date | None,
    latest: pd.Timestamp,
) -> None:
    """Each batch of bars known on ``as_of`` through the gate, the features and the parts."""
    cutoff = pd.Timestamp(as_of) if as_of is not None else None
    while True:
        with timer("read"):
            bars = next(frames, None)
            if bars is not None and cutoff is not None and cutoff < latest:
                bars = _known_on(bars, cutoff, latest, staging)
        if bars is None:
            break
        if not bars.empty:
            _stage_batch(gate, bars, staging, timer)


def _known_on(
    bars: pd.DataFrame, cutoff: pd.Timestamp, latest: pd.Timestamp, staging: _Staging
) -> pd.DataFrame:
    """Replaying history: only what was known after that day's close (and the impossible
    future bars, for the gate to quarantine); a symbol left with nothing is skipped.
    """
    days = bars["date"].to_numpy(dtype="datetime64[ns]")
    keep = np.isnat(days) | (days <= cutoff.to_datetime64()) | (days > latest.to_datetime64())
    if keep.all():
        return bars
    known = bars[keep]
    for symbol in _symbols(bars) - _symbols(known):
        staging.skipped[symbol] = f"it has no bar on or before {cutoff.date()}"
    return known


def _symbols(frame: pd.DataFrame) -> set[str]:
    return {str(s) for s in frame["symbol"].dropna().unique()}


def _stage_batch(gate: QualityGate, bars: pd.DataFrame, staging: _Staging, timer: _Timer) -> None:
    """Check one batch of bars, quarantine the bad rows, featurize the good ones by symbol."""
    with timer("validate"):
        check = gate.check(bars)
    with timer("write"):
        staging.quarantine.add(check.quarantined)
    if not check.quarantined.empty:
        counts = bars["symbol"].value_counts()
        for symbol in _symbols(check.quarantined) - _symbols(check.good):
            if symbol not in staging.last_days:
                staging.skipped[symbol] = f"all {int(counts[symbol])} of its bars were quarantined"
    if check.good.empty:
        return
    staging.flags.extend(check.flags)
    staging.adjusted.update(check.adjusted)
    good, edges = check.good, check.edges
    segment_starts = check.starts.copy()
    segment_starts[edges[:-1]] = True  # every symbol's first row
    with timer("features"):
        features = batch_features(good, segment_starts)
    with timer("write"):
        staging.parts.add(_columns(good, check, features), runs=np.diff(edges).tolist())
    dates = good["date"].to_numpy()
    symbols = good["symbol"].to_numpy()
    for last in (e - 1 for e in edges[1:]):  # sorted by date: its last row is its last day
        staging.last_days[str(symbols[last])] = pd.Timestamp(dates[last]).date()


def _columns(good: pd.DataFrame, check: SymbolCheck, features: dict[str, np.ndarray]) -> Columns:
    """The dataset's rows of one batch: its good bars' columns, then the features."""
    arrays: dict[str, object] = {}
    for name in good.columns:
        if name == "symbol" and check.codes is not None:
            arrays[name] = pd.Categorical.from_codes(check.codes, categories=check.names)
        else:
            arrays[name] = good[name].to_numpy()
    return Columns({**arrays, **features})


def _check_totals(
    gate: QualityGate,
    staging: _Staging,
    shard: Shard,
    as_of: date | None,
    store: ObjectStore,
    today: date,
) -> date:
    """Fail on no (valid) bars or too many bad ones; the day the dataset is as of."""
    last_days = staging.last_days
    when = f" on or before {as_of}" if as_of else ""
    if gate.total_rows == 0 and shard.count == 1:
        raise DataError(f"The data source returned no bars{when}.")
    refusal = gate.refusal()
    if refusal:
        day = as_of or (max(last_days.values()) if last_days else today)
        raise DataError(f"{refusal}{_keep_refused(store, staging.quarantine, day)}.")
    if not last_days and shard.count == 1:
        raise DataError(f"No valid bars{when}.")
    if gate.total_rows == 0:
        log.warning("Shard %s has no bars%s; it publishes an empty share.", shard.name, when)
    return as_of or max(last_days.values())


def _keep_refused(store: ObjectStore, quarantine: PartWriter, as_of: date) -> str:
    """Write a refused batch's bad rows; the end of the refusal sentence naming them."""
    try:
        written = dataset.put_refused(store, quarantine.close(), as_of=as_of)
    except Exception as exc:  # the refusal is the news; a store failure must not hide it
        log.warning("The refused rows could not be written to the store: %s", exc)
        return f" (and its bad rows could not be written to the store: {exc})"
    if not written:
        return ""
    more = f" and {len(written) - 1} more files" if len(written) > 1 else ""
    return f"; the bad rows, with their reasons, are in {written[0]}{more}"


def _warn(stale: list[str], staging: _Staging, effective: date, stale_after_days: int) -> None:
    for symbol, why in sorted(staging.skipped.items()):
        log.warning("%s is skipped: %s.", symbol, why)
    for symbol in stale:
        log.warning(
            "%s is stale: its last bar is %s, more than %d trading days before %s; it has "
            "no row on the latest day.",
            symbol,
            staging.last_days[symbol],
            stale_after_days,
            effective,
        )
    for flag in staging.flags[:20]:
        log.warning("Quality flag, %s %s: %s: %s", flag.symbol, flag.date, flag.rule, flag.detail)


def _quality(prepared: Prepared) -> Contents:
    return Contents(
        quarantined_rows=prepared.quarantined_rows,
        stale_symbols=prepared.stale_symbols,
        quality_flags=[f.to_dict() for f in prepared.flags[:MAX_FLAGS]],
        quality_flag_count=len(prepared.flags),
        skipped_symbols=prepared.skipped_symbols,
        adjusted_symbols=prepared.adjusted_symbols,
        bars=prepared.bars,
    )


def _refuse_all_stale(
    symbols: set[str], stale: list[str], newest: str, as_of: date, settings: Settings
) -> None:
    if symbols and set(stale) >= symbols:
        raise DataError(
            f"Every symbol's last bar is more than STALE_AFTER_DAYS ({settings.stale_after_days}) "
            f"trading days before {as_of} (the newest is {newest}); the source looks stale, so "
            "nothing was published."
        )


def _finalize(ctx: Context, as_of: date | None, count: int) -> DataPrepResult:
    """Combine the manifests of all ``count`` shards of ``as_of`` into one dataset."""
    if as_of is None:
        raise ConfigError("--finalize needs --as-of: the day whose shards to combine.")
    if count == 1:
        raise ConfigError(
            "--finalize combines shards: set DATA_PREP_SHARDS to the number of shards (it is 1)."
        )
    shards = dataset.read_shards(ctx.store, as_of, count)
    contents = Contents.combine([s.contents for s in shards])
    if contents.rows == 0:
        raise DataError(
            f"None of the {count} shards of {as_of} has any rows; nothing was published."
        )
    _refuse_all_stale(
        set(contents.symbols),
        contents.stale_symbols,
        contents.last_date or "?",
        as_of,
        ctx.settings,
    )
    manifest, new = dataset.publish_contents(
        ctx.store, ctx.engine, contents, as_of=as_of, source=shards[0].source, shards=count
    )
    _log_dataset(manifest, new, contents, {})
    return _result(manifest, new, contents, f"all-{count}", {})


def _log_dataset(manifest: Manifest, new: bool, run: Contents, timings: dict[str, float]) -> None:
    """The dataset, and what this run found (its manifest may be an earlier run's)."""
    log.info(
        "Dataset %s: %d rows in %d parts, %d symbols (%d stale, %d skipped, %d adjusted), "
        "%s to %s, %d rows quarantined%s, %d quality flags%s%s",
        manifest.version,
        manifest.rows,
        len(manifest.part_list),
        len(manifest.symbols),
        len(run.stale_symbols),
        len(run.skipped_symbols),
        len(run.adjusted_symbols),
        manifest.first_date,
        manifest.last_date,
        run.quarantined_rows,
        f" (in {', '.join(run.quarantine_keys)})" if run.quarantine_keys else "",
        run.quality_flag_count,
        "" if new else " (already published)",
        f" in {timings['total']:.1f} s" if "total" in timings else "",
    )


def _result(
    manifest: Manifest, new: bool, run: Contents, shard: str, timings: dict[str, float]
) -> DataPrepResult:
    """The dataset's identity from its manifest; the findings from this run (``run``)."""
    return DataPrepResult(
        version=manifest.version,
        as_of=date.fromisoformat(manifest.as_of),
        rows=manifest.rows,
        symbols=manifest.symbols,
        quarantined=run.quarantined_rows,
        new=new,
        shard=shard,
        stale_symbols=run.stale_symbols,
        quality_flags=run.quality_flag_count,
        timings=timings,
        skipped_symbols=run.skipped_symbols,
        adjusted_symbols=run.adjusted_symbols,
        quarantine_keys=run.quarantine_keys,
        bars=manifest.bars,
    )
