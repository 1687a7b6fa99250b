"""The direction classifier's promotion gate on plain probabilities (no training): it
promotes only a classifier whose holdout log loss beats the base-rate classifier's (the
training window's up-rate), and its Diebold-Mariano p-value is the one scipy computes on
the days' mean log loss; accuracy, AUC and Brier score are reported beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from mlops.metrics import classification_metrics
from mlops.settings import load_settings
from mlops.training.stage import judge

DAYS, SYMBOLS = 40, 5
TRAIN_UP_RATE = 0.55


def _holdout(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A holdout of rises and falls, and each row's chance of a rise (what a good
    classifier would know)."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2017-03-01", periods=DAYS, freq="B").repeat(SYMBOLS)
    chance = rng.uniform(0.2, 0.8, size=days.size)
    up = (rng.uniform(size=days.size) < chance).astype("float64")
    return pd.DataFrame({"date": days, "next_up": up}), chance


def _judge(holdout: pd.DataFrame, predicted: np.ndarray, champion: np.ndarray | None = None):
    per_split = {
        "train": {"up_rate": TRAIN_UP_RATE},
        "validation": {},
        "holdout": classification_metrics(holdout["next_up"], predicted),
    }
    return judge(load_settings(), per_split, holdout, predicted, champion, classifier=True)


def _scipy_one_sided_p(holdout: pd.DataFrame, first: np.ndarray, second: np.ndarray) -> float:
    """Harvey-Leybourne-Newbold DM on the days' mean log loss, from scipy alone."""
    y = holdout["next_up"].to_numpy()

    def daily(p: np.ndarray) -> np.ndarray:
        loss = -(special.xlogy(y, p) + special.xlogy(1 - y, 1 - p))
        return pd.Series(loss).groupby(holdout["date"].to_numpy()).mean().to_numpy()

    d = daily(first) - daily(second)
    n = d.size
    statistic = d.mean() / np.sqrt(np.var(d) / n) * np.sqrt((n - 1) / n)
    return float(stats.t.cdf(statistic, df=n - 1))


def test_a_classifier_that_does_not_beat_the_base_rate_is_refused() -> None:
    holdout, _ = _holdout(seed=1)
    rng = np.random.default_rng(2)
    noise = np.clip(0.5 + rng.normal(scale=0.15, size=len(holdout)), 0.01, 0.99)
    evaluation = _judge(holdout, noise)
    decision = evaluation.decision
    assert not decision.promote and not decision.beats_naive and not evaluation.challenger
    assert decision.metric == "log_loss"
    assert decision.reason.startswith(f"holdout log_loss {decision.candidate:.6f} does not beat")
    # The naive classifier says the training window's up-rate every time.
    naive = np.full(len(holdout), TRAIN_UP_RATE)
    assert evaluation.baseline == pytest.approx(classification_metrics(holdout["next_up"], naive))
    assert decision.baseline == pytest.approx(evaluation.baseline["log_loss"])
    assert evaluation.tests["dm_p_value_naive"] == pytest.approx(
        _scipy_one_sided_p(holdout, noise, naive), abs=1e-9
    )
    assert evaluation.tests["dm_p_value_naive"] > 0.5  # worse: no evidence it is better


def test_an_informed_classifier_is_promoted_and_its_p_value_is_scipys() -> None:
    holdout, chance = _holdout(seed=3)
    rng = np.random.default_rng(4)
    champion = np.clip(chance + rng.normal(scale=0.2, size=len(holdout)), 0.05, 0.95)
    evaluation = _judge(holdout, chance, champion)
    decision, tests = evaluation.decision, evaluation.tests
    assert decision.promote, decision.reason
    assert "beats the naive" in decision.reason and "and the champion" in decision.reason
    naive = np.full(len(holdout), TRAIN_UP_RATE)
    assert tests["dm_p_value_naive"] == pytest.approx(
        _scipy_one_sided_p(holdout, chance, naive), abs=1e-9
    )
    assert tests["dm_p_value_champion"] == pytest.approx(
        _scipy_one_sided_p(holdout, chance, champion), abs=1e-9
    )
    assert tests["dm_p_value_naive"] < 0.05
    figures = evaluation.per_split["holdout"]
    assert figures["auc"] == pytest.approx(_scipy_auc(holdout["next_up"].to_numpy(), chance))
    assert figures["accuracy"] == pytest.approx(
        np.mean((chance >= 0.5) == (holdout["next_up"] > 0.5))
    )
    assert figures["brier"] == pytest.approx(np.mean((chance - holdout["next_up"]) ** 2))
    assert evaluation.baseline["auc"] == 0.5  # a constant ranks nothing


def _scipy_auc(y: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney U of the positives' scores over the negatives'."""
    u = stats.mannwhitneyu(score[y > 0.5], score[y < 0.5], alternative="two-sided").statistic
    return float(u / ((y > 0.5).sum() * (y < 0.5).sum()))


def test_promotion_max_p_value_binds_the_classifier_too() -> None:
    holdout, chance = _holdout(seed=3)
    barely = 0.5 * chance + 0.5 * TRAIN_UP_RATE  # better, but not by much
    per_split = {
        "train": {"up_rate": TRAIN_UP_RATE},
        "validation": {},
        "holdout": classification_metrics(holdout["next_up"], barely),
    }
    strict = load_settings(PROMOTION_MAX_P_VALUE=1e-9)
    evaluation = judge(strict, per_split, holdout, barely, None, classifier=True)
    assert evaluation.decision.beats_naive and not evaluation.decision.promote
    assert "not significantly against the naive forecast" in evaluation.decision.reason
    assert evaluation.challenger
