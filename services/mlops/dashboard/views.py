"""The per-symbol and per-feature views: the rows of the page's per-symbol table and the
JSON routes ``/api/models/<name>/symbols`` (a champion's latest window per symbol) and
``/api/drift/features`` (each feature's drift p-value per monitored day), all read by
:mod:`mlops.contracts.live_figures` (the figures monitoring wrote; nothing computed again).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops.context import Context
from mlops.contracts import live_figures
from mlops.errors import MlopsError
from mlops.web_safety import redact_credentials

SYMBOL_COLUMNS = (
    "model",
    "version",
    "window",
    "symbol",
    "n",
    "mape",
    "naive_mape",
    "directional_accuracy",
)


def symbol_rows(found: dict[tuple[str, str], live_figures.SymbolFigures]) -> pd.DataFrame:
    """The per-symbol table: one row per champion and symbol, its window labelled."""
    rows = [
        {
            "model": figures.model_name,
            "version": figures.model_version,
            "window": f"{figures.window_days} sessions to {figures.window_date}",
            "symbol": symbol,
            **values,
        }
        for _, figures in sorted(found.items())
        for symbol, values in sorted(figures.symbols.items())
    ]
    return pd.DataFrame(rows, columns=list(SYMBOL_COLUMNS)) if rows else pd.DataFrame()


def routes(server: Any, ctx: Context) -> None:
    from flask import jsonify, request

    @server.get("/api/models/<name>/symbols")
    def api_model_symbols(name: str) -> Any:
        """The champion's (or ``?version=``'s) latest window per symbol: the figures the
        page's per-symbol section shows, from the same reader."""
        from mlops.contracts.models import champion

        version = request.args.get("version") or ""
        if not version:
            try:
                ref = champion(ctx.mlflow, name, ctx.settings.champion_alias)
            except MlopsError as exc:
                return jsonify(error=redact_credentials(str(exc))), 503
            if ref is None:
                return jsonify(error=f"Model {name[:100]} has no champion."), 404
            version = ref.version
        found = live_figures.read_symbols(ctx.engine, [(name, version)]).get((name, version))
        if found is None:
            return jsonify(error=f"No per-symbol figures of {name[:100]} version {version}."), 404
        return jsonify(found.as_dict())

    @server.get("/api/drift/features")
    def api_feature_drift() -> Any:
        """Each feature's drift p-value on each monitored day (``?model=`` one model's)."""
        rows = live_figures.read_feature_drift(ctx.engine, request.args.get("model") or None)
        return jsonify([row.as_dict() for row in rows])
