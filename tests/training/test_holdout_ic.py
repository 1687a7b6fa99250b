"""The holdout's information coefficient as training reports it (the result, the run's
metrics, the version's tags, promotion.json, what a rerun reads back), against scipy's Pearson and
Spearman correlations per session, recomputed on the holdout from the registered model
(its Ludwig files, read by the fast predictor training evaluates with).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from training.conftest import BUNDLED, CLASSIFIERS

pytestmark = pytest.mark.slow


def _scipy_ic(holdout: pd.DataFrame, signal: np.ndarray) -> dict[str, list[float]]:
    """Each session's Pearson and Spearman correlation of the signal (a predicted return, a
    classifier's probability of a rise) against realised next-day returns, sessions where
    either side does not vary left out."""
    frame = holdout.assign(p=signal, r=holdout["next_close"] / holdout["close"] - 1.0)
    found: dict[str, list[float]] = {"ic": [], "rank_ic": []}
    for _, rows in frame.groupby("date"):
        if len(rows) < 2 or rows["p"].nunique() < 2 or rows["r"].nunique() < 2:
            continue
        found["ic"].append(float(stats.pearsonr(rows["p"], rows["r"])[0]))
        found["rank_ic"].append(float(stats.spearmanr(rows["p"], rows["r"])[0]))
    return found


def _promotion(client, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(
            Path(client.download_artifacts(run_id, "promotion.json", tmp)).read_text()
        )


def test_the_holdout_ic_equals_scipy_in_the_result_run_tags_and_a_rerun(world):
    from mlops.context import open_context
    from mlops.contracts import datasets
    from mlops.contracts.models import predict_close
    from mlops.contracts.predictor import FastPredictor
    from mlops.training.splits import split_by_date

    settings = world.settings()
    ctx = open_context(settings)
    client = world.client()
    try:
        results = {r["model_name"]: r for r in world.trained["models"]}
        assert set(results) == set(BUNDLED)
        for name, result in results.items():
            _, frame = datasets.load(ctx.store, result["dataset_version"])
            holdout = split_by_date(
                frame,
                validation_days=settings.validation_days,
                holdout_days=settings.holdout_days,
            ).holdout
            source = client.get_model_version(name, result["model_version"]).source
            model = FastPredictor.from_dir(unquote(urlparse(source).path))
            signal = (
                model.predict_frame(holdout)  # the probability of a rise
                if name in CLASSIFIERS
                else predict_close(model, holdout) / holdout["close"].to_numpy() - 1.0
            )
            expected = _scipy_ic(holdout, signal)
            ic, rank = np.array(expected["ic"]), np.array(expected["rank_ic"])
            assert len(ic) >= settings.holdout_days - 1, name  # about one IC per session

            holdout_figures = result["holdout"]
            assert holdout_figures["ic_mean"] == pytest.approx(ic.mean(), abs=1e-9), name
            assert holdout_figures["rank_ic_mean"] == pytest.approx(rank.mean(), abs=1e-9)
            assert holdout_figures["ic_std"] == pytest.approx(ic.std(ddof=1), abs=1e-9)
            assert holdout_figures["ic_ir"] == pytest.approx(ic.mean() / ic.std(ddof=1))
            assert holdout_figures["ic_sessions"] == len(ic)
            assert holdout_figures["rank_ic_sessions"] == len(rank)

            metrics = client.get_run(result["run_id"]).data.metrics
            for key in ("ic_mean", "ic_std", "ic_ir", "ic_t", "rank_ic_mean", "rank_ic_ir"):
                assert metrics[f"holdout_{key}"] == pytest.approx(holdout_figures[key]), key
            assert metrics["holdout_ic_t"] == pytest.approx(stats.ttest_1samp(ic, 0.0).statistic)
            tags = client.get_model_version(name, result["model_version"]).tags
            assert float(tags["holdout_ic_mean"]) == pytest.approx(ic.mean(), abs=1e-6)
            assert float(tags["holdout_rank_ic_mean"]) == pytest.approx(rank.mean(), abs=1e-6)
            promotion = _promotion(client, result["run_id"])
            assert promotion["holdout"]["ic_mean"] == pytest.approx(ic.mean(), abs=1e-9)
            assert promotion["holdout"]["rank_ic_mean"] == pytest.approx(rank.mean(), abs=1e-9)
    finally:
        ctx.engine.dispose()

    # A rerun answers with the run it finds, its IC read back from the run's metrics.
    from mlops.training.stage import _evaluation_from_run

    for result in results.values():
        earlier = client.get_run(result["run_id"])
        assert _evaluation_from_run(earlier).per_split["holdout"] == result["holdout"]
