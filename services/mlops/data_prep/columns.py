"""``DATA_COLUMN_MAP``: which of a file's columns holds each canonical column.

The canonical columns are ``date, symbol, open, high, low, close, volume``, and the
optional ``adjusted_close`` (see ``bars``). Common spellings (Date, Timestamp, Ticker,
Stock, Close, Adj Close, ...) are recognised without a map; a map names the others, and the
built-in spellings still apply to the columns it does not name.
Forms (the map is checked before any file is read):

* ``close=Adj Close,date=Day``: for every file;
* ``prices_*.csv: close=Adj Close; legacy.parquet: symbol=Ticker,date=Day``: per file,
  sections separated by ``;``, each a file name or glob (matched against the file's
  name) and a colon; a section without a name applies to every file, and a file's own
  section wins over it for the columns both name;
* the same as JSON: ``{"close": "Adj Close"}`` or ``{"prices_*.csv": {"close": "Adj Close"}}``.

Mistakes are one sentence each (``ConfigError``): a name that is not canonical
(``clsoe=Close``, with the nearest canonical name suggested), one canonical name given
twice, several canonical names mapped to one column, a section matching no file, a
mapped column a file does not have (listing the columns it has).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlops.data_prep.bars import MAPPABLE_COLUMNS
from mlops.errors import ConfigError

ALL_FILES = "*"


def _bad(detail: str) -> ConfigError:
    return ConfigError(f"Setting DATA_COLUMN_MAP is invalid: {detail}.")


def _canonical(name: str) -> str:
    key = name.strip().lower()
    if key in MAPPABLE_COLUMNS:
        return key
    near = difflib.get_close_matches(key, MAPPABLE_COLUMNS, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise _bad(
        f"{name.strip()!r} is not a canonical column{hint}; the canonical columns are "
        f"{', '.join(MAPPABLE_COLUMNS)}"
    )


def _check_targets(mapping: dict[str, str], where: str) -> None:
    """Several canonical names mapped to one column would silently keep only the last."""
    by_target: dict[str, list[str]] = {}
    for ours, theirs in mapping.items():
        by_target.setdefault(theirs.strip().lower(), []).append(ours)
    for names in by_target.values():
        if len(names) > 1:
            column = mapping[names[0]]
            raise _bad(
                f"{', '.join(names)} are all mapped to the one column {column!r}{where}; each "
                "canonical column needs a column of its own"
            )


def _pairs(items: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for ours, theirs in items:
        if not str(ours).strip() or not str(theirs).strip():
            raise _bad(f"{ours}={theirs}{where} is not canonical=column")
        key = _canonical(str(ours))
        if key in mapping:
            raise _bad(f"{key} is mapped twice{where} ({mapping[key]!r} and {theirs!r})")
        mapping[key] = str(theirs).strip()
    _check_targets(mapping, where)
    return mapping


def _text_pairs(text: str, where: str) -> dict[str, str]:
    items = []
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        ours, sep, theirs = pair.partition("=")
        if not sep:
            raise _bad(f"{pair!r}{where} is not canonical=column")
        items.append((ours, theirs))
    return _pairs(items, where)


def _section_of(name: str) -> str:
    return "" if name == ALL_FILES else f" for {name}"


@dataclass(frozen=True)
class ColumnMaps:
    """The parsed map: (file name or glob, {canonical: the file's column}) sections."""

    sections: tuple[tuple[str, dict[str, str]], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> ColumnMaps:
        text = (text or "").strip()
        if not text:
            return cls()
        if text.startswith(("{", "[")):
            return cls._parse_json(text)
        sections = []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            head, colon, rest = part.partition(":")
            if colon and "=" not in head:
                name = head.strip() or ALL_FILES
                sections.append((name, _text_pairs(rest, _section_of(name))))
            else:
                sections.append((ALL_FILES, _text_pairs(part, "")))
        return cls(tuple(sections))

    @classmethod
    def _parse_json(cls, text: str) -> ColumnMaps:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(f"it starts with {text[0]!r} but is not JSON ({exc.msg})") from None
        if not isinstance(payload, dict):
            raise _bad("its JSON must be an object")
        if all(isinstance(v, str) for v in payload.values()):
            return cls(((ALL_FILES, _pairs(payload.items(), "")),))
        if not all(isinstance(v, dict) for v in payload.values()):
            name, value = next((k, v) for k, v in payload.items() if not isinstance(v, str | dict))
            raise _bad(
                f"its JSON must map canonical names to column names, or file names to such "
                f"objects ({name!r}: {value!r} is neither)"
            )
        sections = []
        for name, mapping in payload.items():
            if not all(isinstance(v, str) for v in mapping.values()):
                raise _bad(f"the JSON entry for {name!r} must map canonical names to column names")
            sections.append((str(name), _pairs(mapping.items(), _section_of(str(name)))))
        return cls(tuple(sections))

    def __bool__(self) -> bool:
        return bool(self.sections)

    def for_file(self, path: Path) -> dict[str, str]:
        """The map of one file: every section matching its name, the file's own last."""
        merged: dict[str, str] = {}
        for name, mapping in self.sections:
            if name == ALL_FILES:
                merged.update(mapping)
        for name, mapping in self.sections:
            if name != ALL_FILES and _matches(name, path):
                merged.update(mapping)
        _check_targets(merged, f" for {path.name}")
        return merged

    def check_files(self, files: list[Path]) -> None:
        """Every named section must match at least one file (a typo otherwise)."""
        for name, _ in self.sections:
            if name != ALL_FILES and not any(_matches(name, f) for f in files):
                shown = ", ".join(f.name for f in files[:10]) + (", ..." if len(files) > 10 else "")
                raise _bad(f"its section {name!r} matches none of the files ({shown})")


def _matches(pattern: str, path: Path) -> bool:
    return fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(str(path), pattern)
