"""The models table: every registered model's versions, aliases, status and figures
(holdout against the naive forecast, Diebold-Mariano p-values, the latest session's and
trailing window's live figures from :mod:`mlops.contracts.live_figures`), as ``mlops
models list`` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.contracts.live_figures import LiveFigures
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
    # mlops.contracts.live_figures: the latest session's own figures, then the trailing
    # window's (its length and last day in live_window).
    "live_day",
    "live_day_mape",
    "live_day_naive_mape",
    "live_window",
    "live_window_mape",
    "live_window_naive_mape",
    "live_window_dm_p_naive",
    "live_window_log_loss",
    "live_window_naive_log_loss",
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
    client: MlflowClient, live: dict[tuple[str, str], LiveFigures] | None = None
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
            row.update(_live_columns(live.get((name, version))))
            rows.append({c: row.get(c) for c in COLUMNS})
    return Registry(sorted(names), paused, rows)


def _live_columns(found: LiveFigures | None) -> dict[str, Any]:
    if found is None:
        return {}
    day, window = found.session, found.window
    return {
        "live_day": found.session_date.isoformat() if found.session_date else None,
        "live_day_mape": day.get("mape"),
        "live_day_naive_mape": day.get("naive_mape"),
        "live_window": (
            f"{found.window_days} sessions to {found.window_date}" if found.window_date else None
        ),
        "live_window_mape": window.get("mape"),
        "live_window_naive_mape": window.get("naive_mape"),
        "live_window_dm_p_naive": window.get("dm_p_naive"),
        # A direction classifier's (no MAPE): its log loss and the base rate's.
        "live_window_log_loss": window.get("log_loss"),
        "live_window_naive_log_loss": window.get("naive_log_loss"),
    }


def _status(tags: dict[str, str], paused: bool) -> str:
    status = ARCHIVED if tags.get(STATUS_TAG) == ARCHIVED else "active"
    return f"{status}, training paused" if paused else status


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
