"""The models table: every registered model's versions, aliases, status and figures
(holdout against the naive forecast, Diebold-Mariano p-values, live window), as
``mlops models list`` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.contracts.models import ARCHIVED, PAUSED_TAG, STATUS_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Version tags training writes (the names agreed for issue 11).
FIGURE_TAGS = (
    "holdout_mape",
    "baseline_holdout_mape",
    "holdout_wmape",
    "dm_p_value_naive",
    "dm_p_value_champion",
)
# A direction classifier's (its gate's log loss against the base rate's, and its AUC).
CLASSIFIER_TAGS = ("holdout_log_loss", "baseline_holdout_log_loss", "holdout_auc")
COLUMNS = (
    "model",
    "version",
    "aliases",
    "status",
    "dataset_version",
    "train_end",
    *FIGURE_TAGS,
    "live_mape",
    "live_naive_mape",
    "live_dm_p_naive",
    *CLASSIFIER_TAGS,
)


@dataclass(frozen=True)
class Registry:
    """The registered models (names, paused or not) and one row per version."""

    names: list[str]
    paused: dict[str, bool]
    rows: list[dict[str, Any]]

    def aliases_of(self, name: str) -> dict[str, str]:
        """alias -> version of one model."""
        found: dict[str, str] = {}
        for row in self.rows:
            if row["model"] == name:
                for alias in row["aliases"].split(", "):
                    if alias:
                        found[alias] = row["version"]
        return found


def read_registry(
    client: MlflowClient, live: dict[tuple[str, str], dict[str, float]] | None = None
) -> Registry:
    """Every registered model and version, newest version first."""
    live = live or {}
    names, paused, rows = [], {}, []
    for model in client.search_registered_models(max_results=1000):
        name = model.name
        names.append(name)
        paused[name] = (model.tags or {}).get(PAUSED_TAG) == "true"
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name = '{name}'", max_results=1000)
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            tags = dict(mv.tags or {})
            version = str(mv.version)
            row: dict[str, Any] = {
                "model": name,
                "version": version,
                "aliases": ", ".join(sorted(aliases.get(version, []))),
                "status": _status(tags, paused[name]),
                "dataset_version": tags.get("dataset_version", ""),
                "train_end": tags.get("train_end", ""),
            }
            for tag in (*FIGURE_TAGS, *CLASSIFIER_TAGS):
                row[tag] = _number(tags.get(tag))
            row.update(live.get((name, version), {}))
            rows.append({c: row.get(c) for c in COLUMNS})
    return Registry(sorted(names), paused, rows)


def _status(tags: dict[str, str], paused: bool) -> str:
    status = ARCHIVED if tags.get(STATUS_TAG) == ARCHIVED else "active"
    return f"{status}, training paused" if paused else status


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
