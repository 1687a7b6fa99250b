"""The figures monitoring writes per model, version and symbol: how each version's realized
predictions did, the naive forecast's on the same rows, and paired tests between them.

Paired tests (Diebold-Mariano, :func:`mlops.metrics.diebold_mariano`) take each day's mean
absolute percentage error over the symbols both forecasts scored, so the series is one
value per day (symbols' errors on a day are correlated, days much less) and every symbol
weighs the same whatever its price. ``dm_p_naive`` is the one-sided p-value of "the version
beats the naive forecast", ``dm_p_champion`` that of "the version beats its model's
champion"; either needs :data:`MIN_DM_DAYS` paired days.

The information coefficient (:func:`session_ic`) is a figure of one session: the IC and
Rank IC of the predicted against the realised return over the symbols whose next close
came true that session (:func:`mlops.metrics.daily_ic`). :func:`session_figures` gives
each session its own figures too, so a day's quality is that day's, not its trailing
window's.

A challenger is compared with its model's champion on the same rows only
(:func:`paired_figures`): the (day, symbol) pairs both scored, each one's MAPE and the naive
forecast's on them, and a 95 % confidence interval of the mean daily MAPE difference.

A direction classifier's rows (``score_kind`` ``probability``) get a classifier's figures
instead (:func:`classifier_figures`): accuracy, AUC, Brier score and log loss of its
probability of a rise against whether the close rose, the same figures of the base-rate
classifier (the version's training window's up-rate, every row) as ``naive_*``, and
paired tests on each day's mean log loss (:func:`classifier_tests`). Its IC is that of the
probability against the realised return.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlops.contracts.columns import PROBABILITY, TARGET_DATE_COLUMN
from mlops.metrics import (
    classification_metrics,
    daily_ic,
    diebold_mariano,
    directional_accuracy,
    log_losses,
    regression_metrics,
)

MIN_DM_DAYS = 5  # fewer paired days than this leave the test's variance meaningless
PAIR_KEY = ["symbol", "prediction_date"]


def figures(frame: pd.DataFrame) -> dict[str, float]:
    """MAE, RMSE, MAPE, WMAPE, directional accuracy, the naive forecast's figures and n of
    realized predictions (``predicted_close``, ``last_close``, ``actual_close``).
    """
    actual, predicted, last = frame["actual_close"], frame["predicted_close"], frame["last_close"]
    model = regression_metrics(actual, predicted)
    naive = regression_metrics(actual, last)
    return {
        **model,
        "directional_accuracy": directional_accuracy(actual, predicted, last),
        **{f"naive_{name}": value for name, value in naive.items()},
        "n": float(len(frame)),
    }


def daily_error(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each day's mean absolute percentage error of ``column`` against the actual close."""
    ape = (frame[column] - frame["actual_close"]).abs() / frame["actual_close"].abs()
    return ape.groupby(frame["prediction_date"]).mean().sort_index()


def dm_p_value(first: pd.Series, second: pd.Series) -> float | None:
    """One-sided p-value that ``first`` (daily errors) beats ``second`` on the same days."""
    if len(first) < MIN_DM_DAYS:
        return None
    return diebold_mariano(first.to_numpy(), second.to_numpy(), loss="absolute").p_value


def paired_tests(rows: pd.DataFrame, champion_rows: pd.DataFrame | None) -> dict[str, float]:
    """``dm_p_naive`` and, given the champion's rows of the same model, ``dm_p_champion``
    and the figures on the rows both scored (:func:`paired_figures`).
    """
    tests: dict[str, float] = {}
    p_naive = dm_p_value(daily_error(rows, "predicted_close"), daily_error(rows, "last_close"))
    if p_naive is not None:
        tests["dm_p_naive"] = p_naive
    if champion_rows is not None and not champion_rows.empty:
        paired = rows.merge(
            champion_rows[[*PAIR_KEY, "predicted_close"]],
            on=PAIR_KEY,
            suffixes=("", "_champion"),
        )
        if not paired.empty:
            mine = daily_error(paired, "predicted_close")
            theirs = daily_error(paired, "predicted_close_champion")
            p_champion = dm_p_value(mine, theirs)
            if p_champion is not None:
                tests["dm_p_champion"] = p_champion
            tests.update(paired_figures(paired, mine - theirs))
    return tests


def paired_figures(paired: pd.DataFrame, difference: pd.Series) -> dict[str, float]:
    """A challenger beside its champion on the rows both scored (``paired``, the champion's
    forecast in ``predicted_close_champion``): ``paired_n`` rows over ``paired_days``
    days, ``paired_mape``, ``paired_champion_mape`` and ``paired_naive_mape`` on them, and
    the 95 % Student-t interval (``paired_diff_low``, ``paired_diff_high``) of the mean
    daily MAPE difference ``difference`` (challenger minus champion; below 0: better).
    """
    from scipy import stats

    actual = paired["actual_close"]
    figures = {
        "paired_n": float(len(paired)),
        "paired_days": float(len(difference)),
        "paired_mape": regression_metrics(actual, paired["predicted_close"])["mape"],
        "paired_champion_mape": regression_metrics(actual, paired["predicted_close_champion"])[
            "mape"
        ],
        "paired_naive_mape": regression_metrics(actual, paired["last_close"])["mape"],
    }
    if len(difference) >= MIN_DM_DAYS:
        mean, spread = float(difference.mean()), float(difference.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(difference) - 1)) * spread / len(difference) ** 0.5
        figures["paired_diff_low"], figures["paired_diff_high"] = mean - half, mean + half
    return figures


def session_figures(
    frame: pd.DataFrame, figure: Callable[[pd.DataFrame], dict[str, float]] = figures
) -> pd.DataFrame:
    """Each session's own ``figure`` (:func:`figures`, or a classifier's) and
    :func:`session_ic` (NaN where a session has none), indexed by the session whose
    closes came true (``target_date``).
    """
    groups = frame.groupby(TARGET_DATE_COLUMN, sort=True)
    own = {session: figure(part) for session, part in groups}
    return pd.DataFrame.from_dict(own, orient="index").join(session_ic(frame)).sort_index()


def is_probability(frame: pd.DataFrame) -> bool:
    """Whether the rows are a direction classifier's (its probability of a rise)."""
    return "score_kind" in frame.columns and bool((frame["score_kind"] == PROBABILITY).all())


def rose(frame: pd.DataFrame) -> pd.Series:
    """Whether each realized prediction's next close came above its last close (1 or 0)."""
    return (frame["actual_close"] > frame["last_close"]).astype("float64")


def classifier_figures(frame: pd.DataFrame, base_rate: float | None) -> dict[str, float]:
    """Accuracy, AUC, Brier score, log loss and the up-rate of a classifier's realized
    rows (``score``: its probability of a rise), the base-rate classifier's as
    ``naive_*`` (when the rate is known), and n.
    """
    actual, probability = rose(frame), frame["score"].to_numpy(dtype="float64")
    figures = classification_metrics(actual, probability)
    if base_rate is not None:
        naive = classification_metrics(actual, np.full(len(frame), base_rate))
        figures.update({f"naive_{k}": v for k, v in naive.items() if k != "up_rate"})
    return {**figures, "n": float(len(frame))}


def daily_log_loss(frame: pd.DataFrame, column: str = "score") -> pd.Series:
    """Each day's mean log loss of ``column`` (a probability of a rise)."""
    losses = pd.Series(log_losses(rose(frame), frame[column].to_numpy(dtype="float64")))
    return losses.groupby(frame["prediction_date"].to_numpy()).mean().sort_index()


def classifier_tests(
    rows: pd.DataFrame, champion_rows: pd.DataFrame | None, base_rate: float | None
) -> dict[str, float]:
    """``dm_p_naive`` (against the base-rate classifier) and, given the champion's rows,
    ``dm_p_champion``: one-sided Diebold-Mariano p-values on the days' mean log loss.
    """
    tests: dict[str, float] = {}
    if base_rate is not None:
        naive = rows.assign(naive=base_rate)
        p_naive = dm_p_value(daily_log_loss(naive), daily_log_loss(naive, "naive"))
        if p_naive is not None:
            tests["dm_p_naive"] = p_naive
    if champion_rows is not None and not champion_rows.empty:
        paired = rows.merge(
            champion_rows[[*PAIR_KEY, "score"]], on=PAIR_KEY, suffixes=("", "_champion")
        )
        if not paired.empty:
            p_champion = dm_p_value(
                daily_log_loss(paired), daily_log_loss(paired, "score_champion")
            )
            if p_champion is not None:
                tests["dm_p_champion"] = p_champion
    return tests


def session_ic(frame: pd.DataFrame) -> pd.DataFrame:
    """Each session's ``ic`` and ``rank_ic`` (NaN where the session has none: fewer than two
    symbols, or no spread) of realized predictions, indexed by the session whose closes came
    true (``target_date``): the predicted return ``predicted_close / last_close - 1``
    against the realised ``actual_close / last_close - 1``.
    """
    days = frame[TARGET_DATE_COLUMN]
    if is_probability(frame):  # a classifier: its probability of a rise ranks the symbols
        predicted = frame["score"].astype("float64")
    else:
        predicted = frame["predicted_close"] / frame["last_close"] - 1.0
    realised = frame["actual_close"] / frame["last_close"] - 1.0
    return pd.DataFrame(
        {
            "ic": daily_ic(days, predicted, realised),
            "rank_ic": daily_ic(days, predicted, realised, rank=True),
        }
    )
