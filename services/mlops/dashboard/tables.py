"""The dashboard's plain tables and pages: the page's HTML tables (Dash components) and
the standalone HTML pages the plain routes answer with (escaped, with their headers).
"""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

# The page's few styles (no assets folder, no external stylesheet).
STYLE = """
body{font-family:sans-serif}
table.table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
table.table td,table.table th{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}
.actions label{display:inline-block;margin-right:1em}
#action-result.done{color:#1a7f37;font-weight:bold}
#action-result.refused{color:#b42318;font-weight:bold}
"""
# Headers of a stored or generated page with no script of its own (a walk-forward's report,
# its trade list): whatever a stored value smuggled in, the browser runs no script.
NO_SCRIPT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def table(frame: pd.DataFrame, columns: list[str], name: str = "") -> Any:
    """A plain HTML table of ``frame``'s ``columns``."""
    from dash import html

    if frame.empty:
        return html.P("None yet.")
    columns = [c for c in columns if c in frame.columns]
    head = html.Thead(html.Tr([html.Th(c) for c in columns]))
    body = html.Tbody(
        [html.Tr([html.Td(cell(row.get(c))) for c in columns]) for row in frame.to_dict("records")]
    )
    return html.Table([head, body], className=f"table {name}".strip())


def cell(value: Any) -> str:
    """One value as a table shows it (floats to 6 significant digits, none as blank)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def six(value: float) -> str:
    return f"{value:.6g}"


def page(title: str, body: str) -> str:
    """A standalone page: ``title`` (escaped here) over ``body`` (HTML escaped by the caller)."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def frame_html(frame: pd.DataFrame, name: str) -> str:
    """``frame`` as an HTML table (every cell escaped)."""
    return frame.to_html(
        index=False, na_rep="", classes=f"table {name}", float_format=six, escape=True
    )
