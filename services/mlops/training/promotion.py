"""The promotion rule: the champion alias moves only to a model that beats both the
current champion and the naive baseline (tomorrow's close = today's close) on one holdout.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMOTION_METRIC = "mape"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    candidate: float
    baseline: float
    champion: float | None


def decide(
    candidate: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    metric: str = PROMOTION_METRIC,
) -> Decision:
    """Lower is better; a tie does not win."""
    cand, base = candidate[metric], baseline[metric]
    champ = champion[metric] if champion is not None else None

    def result(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, metric, cand, base, champ)

    if not cand < base:
        return result(False, f"holdout {metric} {cand:.6f} does not beat the naive {base:.6f}")
    if champ is not None and not cand < champ:
        return result(False, f"holdout {metric} {cand:.6f} does not beat the champion {champ:.6f}")
    against = f"the naive {base:.6f}" + ("" if champ is None else f" and the champion {champ:.6f}")
    return result(True, f"holdout {metric} {cand:.6f} beats {against}")
