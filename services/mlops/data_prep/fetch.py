"""What a run asked of a remote source (Alpha Vantage): its requests and what it skipped."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FetchReport:
    """The requests a run sent (retries included) and the symbols it did not fetch."""

    requests: int = 0
    not_fetched: list[str] = field(default_factory=list)  # after the daily limit notice
