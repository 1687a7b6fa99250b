"""Regression metrics on prices, classification metrics on probabilities, the information
coefficient and the Diebold-Mariano test, shared by training, monitoring, model management
and the walk-forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Array = npt.ArrayLike


def regression_metrics(actual: Array, predicted: Array) -> dict[str, float]:
    """MAE, RMSE, MAPE and WMAPE (fractions) of predicted against actual prices.

    WMAPE is the sum of absolute errors over the sum of absolute actuals: unlike MAPE it
    weighs each symbol by its price, so a cheap stock's percentage errors do not dominate.
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    if y.shape != p.shape or y.size == 0:
        raise ValueError("actual and predicted must be non-empty and of the same shape")
    err = p - y
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / np.abs(y))),
        "wmape": float(np.sum(np.abs(err)) / np.sum(np.abs(y))),
    }


def directional_accuracy(actual: Array, predicted: Array, last: Array) -> float:
    """The share of forecasts that called the direction of the move from ``last`` right.

    A day the price did not move counts as right only for a forecast of no move.
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(predicted, dtype="float64")
    x = np.asarray(last, dtype="float64")
    if not (y.shape == p.shape == x.shape) or y.size == 0:
        raise ValueError("actual, predicted and last must be non-empty and of the same shape")
    return float(np.mean(np.sign(p - x) == np.sign(y - x)))


# Probabilities are kept this far from 0 and 1 in a log loss (a certain forecast that is
# wrong costs -log(1e-15), about 34.5, not infinity).
PROBABILITY_EPSILON = 1e-15


def log_losses(actual: Array, probability: Array) -> np.ndarray:
    """Each forecast's log loss: ``-log p`` when the event happened, ``-log(1 - p)`` if not."""
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(probability, dtype="float64")
    p = np.clip(p, PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON)
    if y.shape != p.shape:
        raise ValueError("actual and probability must be of the same shape")
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def roc_auc(actual: Array, score: Array) -> float | None:
    """The area under the ROC curve (ties count half: the Mann-Whitney statistic); None
    when only one class occurs.
    """
    from scipy.stats import rankdata

    y = np.asarray(actual, dtype="float64") > 0.5
    s = np.asarray(score, dtype="float64")
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification_metrics(
    actual: Array, probability: Array, threshold: float = 0.5
) -> dict[str, float]:
    """Log loss, Brier score, accuracy (the class is ``probability >= threshold``), AUC
    (left out when one class alone occurs), the expected calibration error (``ece``,
    :func:`expected_calibration_error` over :data:`CALIBRATION_BINS` bins) and the share of
    events (``up_rate``) of probabilistic forecasts of a binary event (``actual`` 1 or 0).
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(probability, dtype="float64")
    if y.shape != p.shape or y.size == 0:
        raise ValueError("actual and probability must be non-empty and of the same shape")
    figures = {
        "log_loss": float(np.mean(log_losses(y, p))),
        "brier": float(np.mean((p - y) ** 2)),
        "accuracy": float(np.mean((p >= threshold) == (y > 0.5))),
        "up_rate": float(np.mean(y)),
    }
    auc = roc_auc(y, p)
    if auc is not None:
        figures["auc"] = auc
    ece = expected_calibration_error(reliability_curve(y, p))
    if ece is not None:
        figures["ece"] = ece
    return figures


# A reliability curve's bins: this many of equal width over [0, 1].
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability curve: the forecasts whose probability lies in
    ``(low, high]`` (the first bin includes 0), how many (``n``), their mean probability
    and the share of them whose event happened (None for an empty bin)."""

    low: float
    high: float
    n: int
    mean_probability: float | None
    observed_rate: float | None


def reliability_curve(
    actual: Array, probability: Array, bins: int = CALIBRATION_BINS
) -> list[ReliabilityBin]:
    """The binned predicted probability against the observed rate of the event (``actual``
    1 or 0), ``bins`` bins of equal width, right-closed as scikit-learn's
    ``calibration_curve(strategy="uniform")`` bins them; empty bins included.
    """
    y = np.asarray(actual, dtype="float64")
    p = np.asarray(probability, dtype="float64")
    if y.shape != p.shape:
        raise ValueError("actual and probability must be of the same shape")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], p)
    curve = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        curve.append(
            ReliabilityBin(
                float(edges[b]),
                float(edges[b + 1]),
                n,
                float(p[inside].mean()) if n else None,
                float(y[inside].mean()) if n else None,
            )
        )
    return curve


def expected_calibration_error(curve: list[ReliabilityBin]) -> float | None:
    """The expected calibration error of a reliability curve: the mean, weighted by each
    bin's forecasts, of the gap between the bin's mean probability and its observed rate
    (None when no bin holds a forecast)."""
    total = sum(b.n for b in curve)
    if total == 0:
        return None
    return float(
        sum(
            b.n * abs(b.observed_rate - b.mean_probability)
            for b in curve
            if b.n and b.observed_rate is not None and b.mean_probability is not None
        )
        / total
    )


@dataclass(frozen=True)
class DieboldMariano:
    """A Diebold-Mariano test of two forecasts' errors on the same days.

    ``statistic`` is negative when the first forecast's loss is lower; ``p_value`` is the
    one-sided p-value of "the first forecast is more accurate" (small: it is, with that
    confidence), ``p_value_two_sided`` that of "they differ".
    """

    statistic: float
    p_value: float
    p_value_two_sided: float
    n: int
    mean_loss_difference: float


def diebold_mariano(
    errors_first: Array,
    errors_second: Array,
    *,
    horizon: int = 1,
    loss: Literal["squared", "absolute"] = "absolute",
) -> DieboldMariano:
    """Diebold and Mariano (1995) with the small-sample correction of Harvey, Leybourne and
    Newbold (1997): the statistic is scaled by ``sqrt((n + 1 - 2h + h(h - 1) / n) / n)``
    and compared with Student's t with ``n - 1`` degrees of freedom. The long-run variance
    of the loss difference uses its autocovariances up to lag ``horizon - 1`` (a one-day
    forecast: the variance alone).

    Equal losses on every day carry no evidence: the statistic is 0 and the p-values 0.5
    and 1.
    """
    from scipy import stats

    e1 = np.asarray(errors_first, dtype="float64")
    e2 = np.asarray(errors_second, dtype="float64")
    if e1.shape != e2.shape or e1.ndim != 1:
        raise ValueError("the two error series must be one-dimensional and of the same length")
    n = e1.size
    if n < 3:
        raise ValueError("the Diebold-Mariano test needs at least 3 paired errors")
    if horizon < 1 or horizon >= n:
        raise ValueError("horizon must be at least 1 and below the number of errors")
    d = np.abs(e1) - np.abs(e2) if loss == "absolute" else e1**2 - e2**2
    mean = float(d.mean())
    centred = d - mean
    autocov = [float(np.dot(centred[k:], centred[: n - k]) / n) for k in range(horizon)]
    variance = (autocov[0] + 2.0 * sum(autocov[1:])) / n
    if not variance > 0:
        return DieboldMariano(0.0, 0.5, 1.0, n, mean)
    statistic = mean / float(np.sqrt(variance))
    statistic *= float(np.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n))
    p_one = float(stats.t.cdf(statistic, df=n - 1))
    p_two = float(2.0 * stats.t.sf(abs(statistic), df=n - 1))
    return DieboldMariano(statistic, p_one, p_two, n, mean)


@dataclass(frozen=True)
class InformationCoefficient:
    """The information coefficient of a forecast over sessions, as Qlib reports it.

    Each session's IC is the cross-sectional correlation, over the symbols of that
    session, of the predicted return against the realised return (Pearson for the IC,
    Spearman for the Rank IC). Over the sessions: their mean and standard deviation, the
    ICIR (mean / standard deviation) and the t-statistic of the mean (ICIR x sqrt(n)).
    A session with fewer than two symbols, or where either side does not vary, has no IC
    and is not counted.
    """

    mean: float | None
    std: float | None
    ir: float | None
    t_statistic: float | None
    sessions: int

    def as_dict(self, prefix: str) -> dict[str, float | None]:
        return {
            f"{prefix}_mean": self.mean,
            f"{prefix}_std": self.std,
            f"{prefix}_ir": self.ir,
            f"{prefix}_t": self.t_statistic,
            f"{prefix}_sessions": float(self.sessions),
        }


def daily_ic(
    days: Array, predicted_return: Array, realised_return: Array, *, rank: bool = False
) -> Any:
    """Each session's IC (``rank``: Rank IC) as a pandas Series indexed by session, sorted.

    Rows where either return is missing are left out; a session with fewer than two
    rows left, or with no spread on either side, is NaN.
    """
    import pandas as pd

    frame = pd.DataFrame(
        {
            "day": np.asarray(days),
            "p": np.asarray(predicted_return, dtype="float64"),
            "r": np.asarray(realised_return, dtype="float64"),
        }
    ).dropna()
    groups = frame.groupby("day", sort=True)
    if rank:
        frame["p"] = groups["p"].rank(method="average")
        frame["r"] = groups["r"].rank(method="average")
        groups = frame.groupby("day", sort=True)
    p = frame["p"] - groups["p"].transform("mean")
    r = frame["r"] - groups["r"].transform("mean")
    sums = pd.DataFrame(
        {
            "pr": p * r,
            "pp": p * p,
            "rr": r * r,
            "p2": frame["p"] ** 2,
            "r2": frame["r"] ** 2,
            "n": 1,
            "day": frame["day"],
        }
    )
    totals = sums.groupby("day", sort=True).sum()
    # No spread on a side (relative to its scale: rounding noise is no spread): no IC.
    flat = (totals["pp"] <= 1e-24 * totals["p2"]) | (totals["rr"] <= 1e-24 * totals["r2"])
    valid = (totals["n"] >= 2) & ~flat & (totals["pp"] > 0) & (totals["rr"] > 0)
    ic = (totals["pr"] / np.sqrt(totals["pp"] * totals["rr"])).where(valid)
    ic.index.name = "day"
    return ic.astype("float64")


def summarise_ic(series: Any) -> InformationCoefficient:
    """Mean, standard deviation, ICIR and t-statistic of a daily IC series (NaN skipped)."""
    values = np.asarray(series, dtype="float64")
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return InformationCoefficient(None, None, None, None, 0)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else None
    ir = mean / std if std else None
    t = ir * float(np.sqrt(n)) if ir is not None else None
    return InformationCoefficient(mean, std, ir, t, n)


def information_coefficients(
    days: Array, predicted_return: Array, realised_return: Array
) -> dict[str, float | None]:
    """The IC and the Rank IC summarised (``ic_mean``, ``ic_std``, ``ic_ir``, ``ic_t``,
    ``ic_sessions`` and the same with ``rank_ic_``): the one definition every stage uses.
    """
    ic = summarise_ic(daily_ic(days, predicted_return, realised_return))
    rank = summarise_ic(daily_ic(days, predicted_return, realised_return, rank=True))
    return ic.as_dict("ic") | rank.as_dict("rank_ic")
