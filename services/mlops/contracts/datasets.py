"""The reader half of a published feature dataset: its manifest, lookup by day, loading.

A dataset is one or more Parquet parts and a manifest naming them, written last (see
:mod:`mlops.contracts.keys` for where they live); files that no manifest names are
invisible. The ``datasets`` table indexes the manifests for lookup by date. Data prep
writes datasets (``mlops.data_prep.dataset``); every other stage reads them from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from mlops import market_calendar
from mlops.contracts.columns import OHLCV, with_direction
from mlops.contracts.keys import manifest_key
from mlops.db.schema import datasets
from mlops.errors import DataError
from mlops.store import ObjectStore, get_json, get_parquet

# 1: one ``data_key``; 2: ``parts``, ``quarantine_keys``, ``stale_symbols``, quality flags;
# 3: ``skipped_symbols`` and ``adjusted_symbols`` (in older manifests they are unknown, and
# read as empty); 4: ``bars`` (``ohlcv``, as every older dataset, or ``close_only``).
# Readers take any version: fields added later have defaults, and fields a reader does not
# know (a manifest newer than its code) are ignored.
SCHEMA_VERSION = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    version: str
    as_of: str
    content_hash: str
    rows: int
    symbols: list[str]
    first_date: str
    last_date: str
    data_key: str  # the only part of a one-part dataset; "" when there are several
    columns: list[str]
    source: str
    created_at: str
    schema_version: int = SCHEMA_VERSION
    quarantined_rows: int = 0
    quarantine_key: str | None = None  # the only quarantine file, when there is one
    parts: list[dict[str, Any]] = field(default_factory=list)
    quarantine_keys: list[str] = field(default_factory=list)
    stale_symbols: list[str] = field(default_factory=list)
    quality_flags: list[dict[str, str]] = field(default_factory=list)
    quality_flag_count: int = 0
    shards: int = 1
    # Symbols asked for (SYMBOLS) or seen that have no row in the dataset, and why.
    skipped_symbols: dict[str, str] = field(default_factory=dict)
    # Symbols whose prices were put on the scale of their adjusted close.
    adjusted_symbols: list[str] = field(default_factory=list)
    # What its bars hold (DATA_BARS): "ohlcv", or "close_only" (a close alone: no open,
    # high, low or volume column, and only the features computable from closes).
    bars: str = OHLCV

    @property
    def key(self) -> str:
        return manifest_key(self.version)

    @property
    def part_list(self) -> list[dict[str, Any]]:
        """Every part (manifests of schema 1 name one ``data_key``)."""
        if self.parts:
            return self.parts
        return [{"key": self.data_key, "rows": self.rows, "content_hash": self.content_hash}]


_MANIFEST_FIELDS = frozenset(f.name for f in fields(Manifest))


def read_manifest(store: ObjectStore, version: str) -> Manifest:
    payload = get_json(store, manifest_key(version))
    unknown = sorted(set(payload) - _MANIFEST_FIELDS)
    if unknown:
        log.debug("Manifest %s has fields this code does not know: %s", version, unknown)
    return Manifest(**{k: v for k, v in payload.items() if k in _MANIFEST_FIELDS})


def latest_version(engine: Engine, as_of: date | None = None) -> str:
    """The newest dataset published for ``as_of`` or before (newest overall without it)."""
    query = select(datasets.c.version).order_by(
        datasets.c.as_of.desc(), datasets.c.created_at.desc()
    )
    if as_of is not None:
        query = query.where(datasets.c.as_of <= as_of)
    with engine.connect() as conn:
        version = conn.execute(query.limit(1)).scalar()
    if version is None:
        when = f" for {as_of} or earlier" if as_of else ""
        raise DataError(f"No dataset has been published{when}: run `mlops data-prep` first.")
    return version


def version_for_day(engine: Engine, as_of: date | None, *, allow_older: bool = False) -> str:
    """The dataset a stage run for ``as_of`` must use: the one published *for* that day.

    Without ``as_of``: the newest. With it, an older dataset (data prep failed or did not
    run that day) is refused with a sentence naming the day found, unless ``allow_older``
    (the ``--allow-older-dataset`` flag), then it is used with a warning. Every stage that
    takes ``--as-of`` (batch-infer, train, monitor, trade) reads its dataset through this.
    """
    if as_of is None:
        return latest_version(engine)
    query = (
        select(datasets.c.version, datasets.c.as_of)
        .where(datasets.c.as_of <= as_of)
        .order_by(datasets.c.as_of.desc(), datasets.c.created_at.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(query).first()
    if found is None:
        raise DataError(
            f"No dataset has been published for {as_of} or earlier: run "
            f"`mlops data-prep --as-of {as_of}` first."
        )
    version, day = found
    if day == as_of:
        return version
    if not allow_older:
        raise DataError(
            f"No dataset was published for {as_of}; the newest before it is {version} (as of "
            f"{day}): run `mlops data-prep --as-of {as_of}` first, or pass "
            "--allow-older-dataset to use it."
        )
    log.warning(
        "No dataset for %s: using %s (as of %s), as --allow-older-dataset asks", as_of, version, day
    )
    return version


def covering_version(engine: Engine, day: date | None, *, earliest: bool = False) -> str:
    """The newest published dataset whose rows reach ``day`` (its last session on or
    before it); the newest of all without ``day``. ``earliest``: the first one published
    that reaches it instead, which later datasets never change (a walk-forward whose pods
    start hours apart plans on the same dataset).

    For replays of history (backtest, walk-forward): features are causal, so the rows up
    to ``day`` are the same in every dataset that reaches it. Without one, a sentence
    naming the data-prep run that would publish it.
    """
    if day is None:
        return latest_version(engine)
    session = day if market_calendar.is_session(day) else market_calendar.previous_session(day)
    order = (
        (datasets.c.as_of.asc(), datasets.c.created_at.asc())
        if earliest
        else (datasets.c.as_of.desc(), datasets.c.created_at.desc())
    )
    query = (
        select(datasets.c.version).where(datasets.c.last_date >= session).order_by(*order).limit(1)
    )
    with engine.connect() as conn:
        version = conn.execute(query).scalar()
        newest = conn.execute(select(func.max(datasets.c.last_date))).scalar()
    if version is not None:
        return version
    found = f"the newest dataset ends on {newest}" if newest else "no dataset is published"
    raise DataError(
        f"No published dataset reaches --to {day} ({found}): run `mlops data-prep --as-of "
        f"{session}` first."
    )


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by date, then symbol (parts hold them symbol by symbol)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    codes, _ = pd.factorize(frame["symbol"], sort=True)
    order = np.lexsort((codes, frame["date"].to_numpy()))  # the last key sorts first
    if (order == np.arange(len(order))).all():
        return frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def load(store: ObjectStore, version: str) -> tuple[Manifest, pd.DataFrame]:
    """A published dataset and its manifest, all parts in one frame sorted by date, symbol,
    with the direction target ``next_up`` derived from ``next_close`` (see
    :func:`~mlops.contracts.columns.with_direction`).
    """
    manifest = read_manifest(store, version)
    frames = []
    for part in manifest.part_list:
        frame = get_parquet(store, part["key"])
        if len(frame) != part["rows"]:
            raise DataError(
                f"Part {part['key']} of dataset {version} holds {len(frame)} rows but its "
                f"manifest says {part['rows']}."
            )
        frames.append(frame)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame = sort_rows(frame)
    if len(frame) != manifest.rows:
        raise DataError(
            f"Dataset {version} holds {len(frame)} rows but its manifest says {manifest.rows}."
        )
    return manifest, with_direction(frame)
