"""The object store's key layout, in one place.

::

    datasets/features/<version>/manifest.json         a dataset's manifest (written last)
    datasets/features/<version>/data.parquet          its one part, or part-00000.parquet ...
    datasets/features/shards/<as_of>/<i>-of-<n>/      one shard's parts and manifest
    quarantine/<as_of>/<version>-<hash>.parquet       rows the quality gate quarantined
    quarantine/<as_of>/refused-<hash>.parquet         bad rows of a batch it refused whole
    raw/alphavantage/<symbol>/bars.parquet            stored history per symbol
    raw/alphavantage/<symbol>/responses/              every API answer, before parsing
    raw/alphavantage/<symbol>/fetch.json              the day and outcome of its last request
    predictions/<day>/<model>-v<version>.parquet      one batch of predictions
    reports/monitoring/<day>/{quality,drift}.html     evidently reports, summary.json
    reports/drift-calibration/<model>-v<version>.json   a version's drift calibration
    backtests/<key>/{summary.json,equity.html,curves.parquet,trades.parquet}
    walkforward/<key>/plan.json                       a walk-forward's retrain points
    walkforward/points/<key>/<i>.{parquet,json}       one retrain point's predictions, result
    walkforward/<key>/{predictions,champions,trades,curves}.parquet, summary.json, report.html
    catalog/models/<model>.yaml                       a model created by `mlops models create`
"""

from __future__ import annotations

import re
from datetime import date

DATASETS_PREFIX = "datasets/features"
SHARDS_PREFIX = f"{DATASETS_PREFIX}/shards"
QUARANTINE_PREFIX = "quarantine"
RAW_ALPHAVANTAGE_PREFIX = "raw/alphavantage"
PREDICTIONS_PREFIX = "predictions"
MONITORING_REPORTS_PREFIX = "reports/monitoring"
REPORT_NAMES = ("quality", "drift")
DRIFT_CALIBRATION_PREFIX = "reports/drift-calibration"
WALKFORWARD_PREFIX = "walkforward"
MODEL_CATALOG_PREFIX = "catalog/models"
MODEL_CONFIG_SUFFIX = ".yaml"


def dataset_folder(version: str) -> str:
    return f"{DATASETS_PREFIX}/{version}"


def manifest_key(version: str) -> str:
    return f"{dataset_folder(version)}/manifest.json"


def numbered(base: str, count: int) -> list[str]:
    """``<base>.parquet`` for one file, ``<base>-00000.parquet``, ... for several."""
    if count == 1:
        return [f"{base}.parquet"]
    return [f"{base}-{i:05d}.parquet" for i in range(count)]


def dataset_part_keys(version: str, count: int) -> list[str]:
    return numbered(f"{dataset_folder(version)}/{'data' if count == 1 else 'part'}", count)


def quarantine_keys(as_of: date, version: str, content_hashes: list[str]) -> list[str]:
    """A run's quarantine files, named by their content: a rerun that publishes the same
    dataset with other bad rows writes files of its own, the same bad rows the same keys."""
    folder = f"{QUARANTINE_PREFIX}/{as_of.isoformat()}"
    return [f"{folder}/{version}-{h[:12]}.parquet" for h in content_hashes]


def refused_rows_key(as_of: date, content_hash: str) -> str:
    """The bad rows of a batch the quality gate refused (no dataset names them)."""
    return f"{QUARANTINE_PREFIX}/{as_of.isoformat()}/refused-{content_hash[:24]}.parquet"


def shard_folder(as_of: date, index: int, count: int) -> str:
    return f"{SHARDS_PREFIX}/{as_of.isoformat()}/{index}-of-{count}"


def shard_manifest_key(as_of: date, index: int, count: int) -> str:
    return f"{shard_folder(as_of, index, count)}/manifest.json"


def shard_part_key(as_of: date, index: int, count: int, content_hash: str) -> str:
    return f"{shard_folder(as_of, index, count)}/{content_hash[:24]}.parquet"


def shard_quarantine_key(as_of: date, index: int, count: int, content_hash: str) -> str:
    return (
        f"{QUARANTINE_PREFIX}/{as_of.isoformat()}/shard-{index}-of-{count}-"
        f"{content_hash[:24]}.parquet"
    )


def _safe(symbol: str) -> str:
    return re.sub(r"[^A-Z0-9._^=-]", "_", symbol.upper())


def raw_bars_key(symbol: str) -> str:
    return f"{RAW_ALPHAVANTAGE_PREFIX}/{_safe(symbol)}/bars.parquet"


def raw_responses_prefix(symbol: str) -> str:
    return f"{RAW_ALPHAVANTAGE_PREFIX}/{_safe(symbol)}/responses/"


def raw_fetch_log_key(symbol: str) -> str:
    return f"{RAW_ALPHAVANTAGE_PREFIX}/{_safe(symbol)}/fetch.json"


def predictions_key(day: date, model_name: str, model_version: str) -> str:
    return f"{PREDICTIONS_PREFIX}/{day.isoformat()}/{model_name}-v{model_version}.parquet"


def monitoring_reports_prefix(day: date | str) -> str:
    text = day if isinstance(day, str) else day.isoformat()
    return f"{MONITORING_REPORTS_PREFIX}/{text}"


def monitoring_report_key(day: date | str, name: str) -> str:
    """``reports/monitoring/<day>/<name>``; ``name`` is a file name (``quality.html``)."""
    return f"{monitoring_reports_prefix(day)}/{name}"


def drift_calibration_key(model_name: str, model_version: str) -> str:
    """The drift shares of past training windows of one model version (monitoring's cache)."""
    return f"{DRIFT_CALIBRATION_PREFIX}/{model_name}-v{model_version}.json"


def walkforward_folder(key: str) -> str:
    return f"{WALKFORWARD_PREFIX}/{key}"


# A walk-forward's outputs (mlops.walkforward.publish writes them; `mlops backtest
# --walk-forward` reads the predictions that served).
WALKFORWARD_OUTPUTS = {
    "plan": "plan.json",
    "predictions": "predictions.parquet",
    "champions": "champions.parquet",
    "trades": "trades.parquet",
    "curves": "curves.parquet",
    "ic": "ic.parquet",
    "summary": "summary.json",
    "report": "report.html",
}


def walkforward_output_keys(key: str) -> dict[str, str]:
    return {name: f"{walkforward_folder(key)}/{file}" for name, file in WALKFORWARD_OUTPUTS.items()}


def walkforward_point_keys(points_key: str, index: int) -> tuple[str, str]:
    """A retrain point's predictions and its result JSON (written last: the point is done),
    under the key of its trainings (shared by walk-forwards that differ only in rules).
    """
    base = f"{WALKFORWARD_PREFIX}/points/{points_key}/{index:04d}"
    return f"{base}.parquet", f"{base}.json"


def stored_config_key(model_name: str) -> str:
    """The Ludwig config of a model of the stored catalog (``mlops models create``)."""
    return f"{MODEL_CATALOG_PREFIX}/{model_name}{MODEL_CONFIG_SUFFIX}"
