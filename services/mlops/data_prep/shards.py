"""Which symbols one shard of a Kubernetes Indexed Job processes.

A symbol belongs to shard ``stable_hash(symbol) % count``. The hash is SHA-256, so the
split is the same in every process and on every machine (Python's ``hash()`` is salted
per process and would scatter a symbol over several shards).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops.errors import ConfigError

if TYPE_CHECKING:
    from mlops.settings import Settings


def stable_hash(symbol: str) -> int:
    """A 64-bit hash of the symbol, identical across processes and machines."""
    return int.from_bytes(hashlib.sha256(symbol.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"Shard index {self.index} is not in 0..{self.count - 1}.")

    @classmethod
    def from_settings(cls, settings: Settings) -> Shard:
        """This process's shard; checked here, so other stages never trip over the index."""
        index, count = settings.job_completion_index, settings.data_prep_shards
        if index >= count:
            raise ConfigError(
                f"JOB_COMPLETION_INDEX {index} must be below DATA_PREP_SHARDS ({count}): set "
                "DATA_PREP_SHARDS to the Indexed Job's completions."
            )
        return cls(index, count)

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, symbol: object) -> bool:
        """Whether this shard processes ``symbol``; rows without a symbol go to shard 0."""
        if self.count == 1:
            return True
        if not isinstance(symbol, str) or not symbol:
            return self.index == 0
        return stable_hash(symbol) % self.count == self.index
