"""A close-only universe end to end: `mlops data-prep`, `mlops train` and `mlops batch-infer`
with DATA_BARS=close_only (the packaged close-only catalog, stock-close-only, one epoch);
a model of every feature is refused on that dataset before anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.data_prep.sources import load_sample
from training.conftest import run_cli

pytestmark = pytest.mark.slow

AS_OF = "2017-05-31"


def test_a_close_only_universe_trains_and_is_scored(tmp_path: Path) -> None:
    from conftest import clean_environ

    levels = tmp_path / "levels.csv"
    load_sample()[["date", "symbol", "close"]].to_csv(levels, index=False)
    env = clean_environ(
        {
            "MLOPS_HOME": str(tmp_path / "home"),
            "DATA_SOURCE": "files",
            "DATA_FILES": str(levels),
            "DATA_BARS": "close_only",
            "TRAIN_EPOCHS": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    for args in (("migrate",), ("data-prep", "--as-of", AS_OF)):
        outcome = run_cli(env, *args)
        assert outcome.code == 0, str(outcome)
    dataset = outcome.json()["version"]

    # A model of every feature (the OHLCV catalog's) is refused before any run.
    refused = run_cli({**env, "DATA_BARS": "ohlcv"}, "train", "--model", "stock-close")
    assert refused.code == 2 and refused.errors == [
        f"error: stock-close needs input features that dataset {dataset} does not have: "
        "range_pct, log_volume; a close-only dataset (DATA_BARS=close_only) has only the "
        "features computable from closes: use a model of those, such as stock-close-only."
    ]

    trained = run_cli(env, "train", "--as-of", AS_OF)  # MODEL_NAME: stock-close-only
    assert trained.code == 0, str(trained)
    result = trained.json()
    assert (result["model_name"], result["model_version"], result["dataset_version"]) == (
        "stock-close-only",
        "1",
        dataset,
    )

    from mlops import tracking
    from mlops.settings import load_settings

    client = tracking.connect(load_settings(MLOPS_HOME=env["MLOPS_HOME"]))
    assert [m.name for m in client.search_registered_models()] == ["stock-close-only"]
    run = client.get_run(result["run_id"])
    assert run.data.params["input_features"] == (
        "rsi_14,return_1d,close_to_sma_10,close_to_ema_10,close_to_dema_10,symbol"
    )
    # One epoch seldom beats the naive forecast: the champion is set here if it did not.
    client.set_registered_model_alias("stock-close-only", "champion", "1")

    scored = run_cli(env, "batch-infer", "--as-of", AS_OF)
    assert scored.code == 0, str(scored)
    answer = scored.json()
    assert (answer["model_name"], answer["model_version"], answer["new_rows"]) == (
        "stock-close-only",
        "1",
        5,
    )
    assert answer["symbols"] == ["AAPL", "COKE", "GOOGL", "TSLA", "YHOO"]
