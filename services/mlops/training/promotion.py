"""The promotion rule: the champion alias moves only to a model that beats both the
current champion and the naive baseline (tomorrow's close = today's close) on one holdout.

A holdout of a few weeks cannot tell a small difference from noise, so each comparison
also carries the one-sided p-value of a Diebold-Mariano test on the same days (small: the
candidate is more accurate, with that confidence). With a maximum p-value
(``PROMOTION_MAX_P_VALUE``) significance is a condition too; without one the p-values are
reported only.
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
    p_value_naive: float | None = None
    p_value_champion: float | None = None
    max_p_value: float | None = None

    @property
    def beats_naive(self) -> bool:
        """Whether the candidate's holdout figure beats the naive forecast's (the
        condition for a version that is not promoted to be scored as the challenger).
        """
        return self.candidate < self.baseline


def decide(
    candidate: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    metric: str = PROMOTION_METRIC,
    *,
    p_value_naive: float | None = None,
    p_value_champion: float | None = None,
    max_p_value: float | None = None,
) -> Decision:
    """Lower is better; a tie does not win. With ``max_p_value``, the Diebold-Mariano
    p-value against the naive forecast (and against the champion, when there is one) must
    be at most it; a missing p-value then fails the condition.
    """
    cand, base = candidate[metric], baseline[metric]
    champ = champion[metric] if champion is not None else None

    def result(promote: bool, reason: str) -> Decision:
        return Decision(
            promote,
            reason,
            metric,
            cand,
            base,
            champ,
            p_value_naive,
            p_value_champion if champ is not None else None,
            max_p_value,
        )

    naive = f"the naive {base:.6f}{_p(p_value_naive)}"
    if not cand < base:
        return result(False, f"holdout {metric} {cand:.6f} does not beat {naive}")
    against = naive
    if champ is not None:
        held = f"the champion {champ:.6f}{_p(p_value_champion)}"
        if not cand < champ:
            return result(False, f"holdout {metric} {cand:.6f} does not beat {held}")
        against = f"{naive} and {held}"
    beats = f"holdout {metric} {cand:.6f} beats {against}"
    if max_p_value is not None:
        failed = _not_significant(
            {"the naive forecast": p_value_naive}
            | ({} if champ is None else {"the champion": p_value_champion}),
            max_p_value,
        )
        if failed:
            return result(False, f"{beats}, but not significantly against {failed}")
    return result(True, beats)


def _p(value: float | None) -> str:
    return "" if value is None else f" (Diebold-Mariano p {value:.4f})"


def _not_significant(p_values: dict[str, float | None], max_p_value: float) -> str:
    """The comparisons that miss ``max_p_value``, as words ("" when none)."""
    missed = [
        f"{who} (no p-value)" if p is None else f"{who} (p {p:.4f} > {max_p_value:g})"
        for who, p in p_values.items()
        if p is None or not p <= max_p_value
    ]
    return f"{' nor '.join(missed)}, PROMOTION_MAX_P_VALUE" if missed else ""
