"""The Dash app: one page (charts, tables, the action form) and a few plain routes.

Routes besides the page: ``/healthz`` (probes), ``/reports/<day>/<name>.html`` (the
evidently reports in the store), ``/backtests/<run_key>/chart`` (a backtest's equity
chart), ``/backtests/<run_key>/trades`` (its trade list), ``/api/metrics``,
``/api/equity`` (``?broker=``, ``?account=``, ``?strategy=``), ``/api/leaderboard``,
``/api/models`` (as ``mlops models list``), ``/api/models/<name>/symbols`` (the champion's
latest window per symbol) and ``/api/drift/features`` (each feature's drift p-value per
monitored day): the page's figures as JSON; and a walk-forward's report, trade list and
champion timeline (:mod:`mlops.dashboard.walkforward`, which draws its section too).

``POST /api/actions`` takes the same actions as the buttons from a script (JSON body,
credentials in the Authorization header) and answers with their HTTP status: 401 without
valid credentials, 403 for a role that may not or another site's Origin, 429 for a
throttled client, 409 for an action's own refusal.

Every figure is read fresh from the database and the registry when the page loads, when
the metric is changed, on "Sign in" and after each action. An action is a button: it asks
for confirmation (the browser's confirm dialog, with what exactly will be done), then the
server checks who signs in and calls :func:`mlops.dashboard.actions.perform`.

Every answer carries :data:`mlops.web_safety.FRAME_HEADERS` (no framing by another
site), and every page or JSON answer has credentials in URIs redacted
(:func:`mlops.web_safety.redact_credentials`). The stages' error texts (and the text of
an alert about a failure) are shown only to a signed-in operator or admin. With
``DASHBOARD_ANONYMOUS_VIEW=false`` every route but ``/healthz`` asks for HTTP basic auth.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict
from typing import Any, Literal

import pandas as pd

from mlops import alerts
from mlops.access import Principal
from mlops.context import Context
from mlops.contracts import keys, live_figures
from mlops.dashboard import actions, charts, data, views, walkforward
from mlops.dashboard.auth import NO_USERS, Credentials, Gate, Refused
from mlops.dashboard.registry import COLUMNS, Registry, read_registry
from mlops.dashboard.tables import STYLE, six, table
from mlops.errors import MlopsError
from mlops.store import StoreError
from mlops.trading import leaderboard, performance
from mlops.web_safety import forbid_framing, redact_credentials

log = logging.getLogger(__name__)

# A day's reports: quality, drift, and each classifier champion's classification-<model>.
REPORT_NAME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})/(quality|drift|classification-[a-z0-9][a-z0-9-]{0,62})\.html$"
)
BUTTONS = {
    "promote": "Promote",
    "rollback": "Roll back",
    "archive": "Archive",
    "pause": "Pause training",
    "resume": "Resume training",
    "retrain": "Retrain now",
    "monitor": "Run monitoring now",
    "halt": "Halt trading",
    "unhalt": "Resume trading",
    "create": "Create model",
    "delete": "Delete",
}
INDEX = (
    "<!DOCTYPE html><html><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}"
    f"<style>{STYLE}</style></head><body>"
    "{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body></html>"
)
# How often the page reads the requests' status again (they run in the background).
REQUESTS_REFRESH_MS = 5_000
REQUEST_COLUMNS = [
    "id", "created_at", "actor", "kind", "model_name", "status", "exit_code", "result",
    "started_at", "finished_at",
]  # fmt: skip
HIDDEN_ERROR = "(hidden: sign in as an operator or admin to see it)"
REDACTED_TYPES = ("text/html", "application/json", "text/plain")


def create_app(ctx: Context, gate: Gate | None = None) -> Any:
    """The Dash app (its Flask server is ``app.server``); ``gate``: who may sign in (by
    default the settings' users or token, with the throttle on the real clock)."""
    from dash import Dash

    app = Dash(
        __name__,
        title="MLOps control plane",
        update_title="",
        serve_locally=True,
        suppress_callback_exceptions=False,
    )
    app.index_string = INDEX
    gate = gate or Gate(ctx.settings)  # a setting it cannot use stops here, with its sentence
    app.layout = _layout(gate.enabled)
    _page_callbacks(app, ctx, gate)
    _action_callbacks(app, ctx, gate)
    walkforward.register(app, ctx)
    _guard(app.server, ctx, gate)
    _routes(app.server, ctx, gate)
    walkforward.routes(app.server, ctx)
    views.routes(app.server, ctx)
    return app


# The page.


def _layout(enabled: bool) -> Any:
    from dash import dcc, html

    metric_choice = dcc.RadioItems(
        id="metric",
        options=[{"label": label, "value": key} for key, label in charts.METRIC_LABELS.items()],
        value="mape",
        inline=True,
    )
    return html.Div(
        [
            html.H1("MLOps control plane"),
            html.P(
                "Viewing anonymously: sign in to act." if enabled else NO_USERS,
                id="auth-state",
            ),
            html.H2("Prediction quality"),
            metric_choice,
            dcc.Graph(id="quality-chart"),
            dcc.Graph(id="quality-window-chart"),
            dcc.Graph(id="versus-chart"),
            html.H2("Per symbol: each champion's latest window"),
            dcc.Graph(id="symbols-chart"),
            html.Div(id="symbols-table"),
            html.H2("Models"),
            html.Div(id="models-table"),
            _action_form(enabled),
            html.H2("Drift and retrain triggers"),
            dcc.Graph(id="drift-chart"),
            dcc.Graph(id="feature-drift-chart"),
            dcc.Graph(id="trigger-chart"),
            html.H2("Equity"),
            html.Div(id="equity-charts"),
            html.H2("Leaderboard"),
            html.Div(id="leaderboard"),
            html.H2("Backtests"),
            html.Div(id="backtests"),
            *walkforward.layout(),
            html.H2("Requests (retrain, monitoring)"),
            html.Div(id="requests"),
            dcc.Interval(id="requests-tick", interval=REQUESTS_REFRESH_MS),
            html.H2("Retrain triggers (monitoring)"),
            html.Div(id="retrains"),
            html.H2("Model actions (audit)"),
            html.Div(id="audit"),
            html.H2("Recent stage runs"),
            html.Div(id="stage-runs"),
            html.H2("Alerts"),
            html.Div(id="alerts"),
            html.H2("Monitoring reports"),
            html.Div(id="reports"),
            dcc.Store(id="refresh", data=0),
        ],
        style={"margin": "2em", "maxWidth": "1200px"},
    )


def _action_form(enabled: bool) -> Any:
    from dash import dcc, html

    def field(label: str, component: Any) -> Any:
        return html.Label([label, " ", component])

    def box(name: str, kind: Literal["text", "password"] = "text", **extra: Any) -> Any:
        return dcc.Input(id=name, type=kind, value="", style={"width": "16em"}, **extra)

    return html.Div(
        [
            html.H2("Actions"),
            html.Div(
                [
                    field("User", box("user", autoComplete="username")),
                    field("Password", box("password", "password")),
                    html.Button("Sign in", id="btn-signin", n_clicks=0),
                ]
            ),
            html.Div(
                [
                    field("Model", box("model", list="names")),
                    html.Datalist(id="names"),
                    field("Version", box("version")),
                    field("Reason", box("reason")),
                    field("Strategy (halt, resume; empty: all)", box("strategy")),
                    dcc.Checklist(
                        id="force",
                        options=[{"label": "force (promote a loser)", "value": "force"}],
                        value=[],
                        inline=True,
                    ),
                ],
                style={"margin": "0.5em 0"},
            ),
            html.Details(
                [
                    html.Summary("New model: its Ludwig YAML (for Create model)"),
                    dcc.Textarea(
                        id="config",
                        value="",
                        placeholder="input_features: ...\noutput_features: ...",
                        style={"width": "100%", "height": "14em", "fontFamily": "monospace"},
                    ),
                ]
            ),
            html.Div(
                [
                    html.Button(
                        label,
                        id=f"btn-{key}",
                        n_clicks=0,
                        disabled=not enabled,
                        style={"marginRight": "0.5em"},
                    )
                    for key, label in BUTTONS.items()
                ]
            ),
            dcc.ConfirmDialog(id="confirm"),
            dcc.Store(id="pending"),
            html.P(id="action-result", role="status"),
        ],
        className="actions",
        style={"border": "1px solid #ccc", "padding": "0.5em 1em"},
    )


def _page_callbacks(app: Any, ctx: Context, gate: Gate) -> None:
    from dash import Input, Output, State

    @app.callback(
        Output("requests", "children"),
        Input("requests-tick", "n_intervals"),
        Input("refresh", "data"),
        Input("btn-signin", "n_clicks"),
        State("user", "value"),
        State("password", "value"),
    )
    def requests(_tick: int | None, _refresh: int, _signin: int, user: str, password: str):
        from flask import request

        credentials = Credentials.from_request(user, password, dict(request.headers))
        return requests_table(ctx, gate.known(credentials))

    @app.callback(
        *(Output(element, prop) for element, prop in SECTIONS),
        Output("auth-state", "children"),
        Input("refresh", "data"),
        Input("metric", "value"),
        Input("btn-signin", "n_clicks"),
        State("user", "value"),
        State("password", "value"),
    )
    def render(_refresh: int, metric: str, _signin: int, user: str, password: str):
        principal, state = _viewer(ctx, gate, Credentials.from_request(user, password, {}))
        return (*render_sections(ctx, metric or "mape", principal), state)


def requests_table(ctx: Context, viewer: Principal | None = None) -> Any:
    """The newest requests for work with their status (read fresh each time); why one
    failed only for an operator or admin ``viewer`` (as the stages' error texts)."""
    from dash import html

    from mlops.action_requests import FAILED, recent

    found = recent(ctx.engine)
    if not found:
        return html.P("None yet: the Retrain now and Run monitoring now buttons add one.")
    rows = pd.DataFrame([asdict(r) for r in found])
    if viewer is None or not viewer.sees_errors:
        rows.loc[rows["status"] == FAILED, "result"] = HIDDEN_ERROR
    return table(rows, REQUEST_COLUMNS, "requests")


def _viewer(ctx: Context, gate: Gate, credentials: Credentials) -> tuple[Principal | None, str]:
    """Who views the page (the fields' user, else the request's basic auth), and the
    sentence saying so; a failed sign-in is audited and the page shown anonymously.
    """
    from flask import request

    if not credentials.candidates():
        credentials = Credentials.from_request("", "", dict(request.headers))
    if not gate.enabled:
        return None, NO_USERS
    try:
        principal = gate.sign_in(credentials, request.remote_addr or "")
    except Refused as exc:
        if exc.audit:
            caller = actions.Caller(credentials, request.remote_addr or "")
            actions.audit_refusal(ctx, actions.ActionRequest("sign-in"), str(exc), caller)
        return None, str(exc)
    if principal is None:
        return None, "Viewing anonymously: sign in to act."
    return principal, f"Signed in as {principal.name} ({principal.role})."


# The page's sections the callback fills, in the order render_sections gives them.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("quality-chart", "figure"),
    ("quality-window-chart", "figure"),
    ("versus-chart", "figure"),
    ("symbols-chart", "figure"),
    ("symbols-table", "children"),
    ("models-table", "children"),
    ("names", "children"),
    ("drift-chart", "figure"),
    ("feature-drift-chart", "figure"),
    ("trigger-chart", "figure"),
    ("equity-charts", "children"),
    ("leaderboard", "children"),
    ("backtests", "children"),
    ("retrains", "children"),
    ("audit", "children"),
    ("stage-runs", "children"),
    ("alerts", "children"),
    ("reports", "children"),
)


def section(sections: tuple[Any, ...], element: str) -> Any:
    """The content of the section ``element`` among ``render_sections``' outputs."""
    return sections[[name for name, _ in SECTIONS].index(element)]


def render_sections(ctx: Context, metric: str, viewer: Principal | None = None) -> tuple[Any, ...]:
    """Every section's content, read fresh (the outputs of the page callback); the
    stages' error texts only for an operator or admin ``viewer``."""
    from dash import dcc, html

    figures = data.load_figures(ctx.engine)
    live = live_figures.read(ctx.engine)
    registry, registry_error = _registry(ctx, live)
    roles = _roles(registry, ctx.settings.champion_alias)
    champions = sorted(key for key, role in roles.items() if role == "champion")
    per_symbol = live_figures.read_symbols(ctx.engine, champions)
    trading = next((k for k in champions if k[0] == ctx.settings.model_name), None)
    equity = [
        dcc.Graph(figure=figure, id=f"equity-{n}")
        for n, (_, figure) in enumerate(charts.equity_by_account(figures.equity))
    ]
    return (
        charts.metric_over_time(figures.metrics, metric),
        charts.metric_over_time(figures.metrics, metric, window=True),
        charts.champion_vs_challengers(live, roles),
        charts.symbols(per_symbol.get(trading) if trading else None, ctx.settings.model_name),
        table(views.symbol_rows(per_symbol), list(views.SYMBOL_COLUMNS), "symbols"),
        _models_table(registry, registry_error),
        [html.Option(value=name) for name in (registry.names if registry else [])],
        charts.drift(data.drift(figures.metrics)),
        charts.feature_drift(live_figures.read_feature_drift(ctx.engine)),
        charts.triggers(data.trigger_counts(figures.metrics)),
        equity or html.P("No equity snapshots yet: run mlops trade."),
        _leaderboard(ctx),
        _backtests(figures.backtests),
        table(figures.retrains, ["requested_date", "model_version", "status", "reason"]),
        table(
            figures.actions,
            ["created_at", "actor", "action", "outcome", "model_name", "model_version", "reason"],
        ),
        table(
            _stage_runs(figures.runs, viewer),
            ["stage", "run_date", "started_at", "finished_at", "status", "error"],
        ),
        _alerts(data.latest_alerts(ctx.engine), viewer),
        _report_links(ctx),
    )


def _leaderboard(ctx: Context) -> Any:
    """Every strategy's standing (:mod:`mlops.trading.leaderboard`, as the command shows it)."""
    from dash import html

    board = leaderboard.compute(ctx.engine)
    if not board:
        return html.P("No equity snapshots yet: run mlops trade.")
    titles = [title for _, title, _ in leaderboard.COLUMNS]
    shown = table(pd.DataFrame([leaderboard.cells(row) for row in board]), titles, "leaderboard")
    if min(row.sessions for row in board) >= performance.SHORT_WINDOW:
        return shown
    return html.Div(
        [
            shown,
            html.P(
                f"Sharpe ratios over fewer than {performance.SHORT_WINDOW} sessions are "
                "unreliable; slippage is each fill against its decision's close (positive: "
                "worse)."
            ),
        ]
    )


def _stage_runs(runs: pd.DataFrame, viewer: Principal | None) -> pd.DataFrame:
    """The stage runs, their error texts hidden from all but operators and admins (and
    without the credentials of a URI for them)."""
    if "error" not in runs:
        return runs
    shown = runs.copy()
    if viewer is not None and viewer.sees_errors:
        shown["error"] = shown["error"].map(
            lambda text: redact_credentials(text) if isinstance(text, str) else text
        )
    else:
        shown["error"] = shown["error"].where(shown["error"].isna(), HIDDEN_ERROR)
    return shown


def _alerts(found: pd.DataFrame, viewer: Principal | None) -> Any:
    """The last alerts sent or attempted: a failure's text (a command's error sentence) and
    why one was not delivered only for operators and admins, as the stage runs' errors."""
    from dash import html

    if found.empty:
        return html.P("No alert sent yet (alerts need ALERT_WEBHOOK_URL).")
    shown = found.copy()
    shown["delivered"] = shown["delivered"].map(lambda taken: "yes" if taken else "no")
    sees = viewer is not None and viewer.sees_errors
    secret = shown["kind"].map(alerts.is_failure)
    shown["text"] = [
        (redact_credentials(text) if sees else HIDDEN_ERROR) if hidden else text
        for text, hidden in zip(shown["text"], secret, strict=True)
    ]
    detail = shown["detail"].notna()
    shown.loc[detail, "detail"] = (
        shown.loc[detail, "detail"].map(redact_credentials) if sees else HIDDEN_ERROR
    )
    return table(shown, ["created_at", "kind", "delivered", "text", "detail"], "alerts")


def _registry(
    ctx: Context, live: dict[tuple[str, str], live_figures.LiveFigures]
) -> tuple[Registry | None, str]:
    try:
        return read_registry(ctx.mlflow, live), ""
    except MlopsError as exc:
        return None, redact_credentials(str(exc))
    except Exception as exc:  # the registry is down: the rest of the page still shows
        log.warning("The dashboard cannot read the MLflow registry: %s", exc)
        return None, f"The MLflow registry cannot be read: {type(exc).__name__}."


def _roles(registry: Registry | None, alias: str) -> dict[tuple[str, str], str]:
    roles: dict[tuple[str, str], str] = {}
    if registry is None:
        return roles
    for name in registry.names:
        for role, version in registry.aliases_of(name).items():
            if role in (alias, "challenger"):
                roles[(name, version)] = "champion" if role == alias else "challenger"
    return roles


def _models_table(registry: Registry | None, error: str) -> Any:
    from dash import html

    if registry is None:
        return html.P(error)
    return table(pd.DataFrame(registry.rows, columns=list(COLUMNS)), list(COLUMNS), "models")


def _backtests(runs: pd.DataFrame) -> Any:
    from dash import html

    found = data.backtest_tables(runs)
    if not found:
        return html.P("None yet: run mlops backtest.")
    parts: list[Any] = []
    for run, summary in found:
        details = run["details"]
        sessions, in_sample = details.get("sessions"), details.get("in_sample_sessions")
        what = f"{int(run['symbols'])} symbols"
        if sessions:
            what += f", {sessions} sessions"
        if in_sample:
            what += f", {in_sample} of {sessions} sessions in sample"
        fills = sum(int(f.get("trades") or 0) for f in details.get("figures", {}).values())
        parts.append(
            html.H3(
                [
                    f"{run['model']} {run['start_date']} to {run['end_date']} ({what}) ",
                    html.A("equity chart", href=f"/backtests/{run['run_key']}/chart"),
                    " ",
                    html.A(f"trades ({fills} fills)", href=f"/backtests/{run['run_key']}/trades"),
                ]
            )
        )
        if details.get("notes"):
            parts.append(html.P(" ".join(details["notes"]), className="backtest-notes"))
        parts.append(table(summary, list(summary.columns)))
    return parts


def report_days(ctx: Context, limit: int = 30) -> list[tuple[str, list[str]]]:
    """The latest days with evidently reports in the store, each with its report names."""
    found: dict[str, list[str]] = {}
    prefix = keys.monitoring_reports_prefix("").rstrip("/") + "/"
    for key in ctx.store.list(prefix):
        relative = key[len(prefix) :] if key.startswith(prefix) else key
        match = REPORT_NAME.match(relative)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return [(day, sorted(found[day])) for day in sorted(found, reverse=True)[:limit]]


def _report_links(ctx: Context) -> Any:
    from dash import html

    try:
        days = report_days(ctx)
    except StoreError as exc:
        return html.P(str(exc))
    if not days:
        return html.P("None yet: run mlops monitor.")
    return html.Ul(
        [
            html.Li(
                [day, ": "]
                + [
                    html.A(name, href=f"/reports/{day}/{name}.html", style={"marginRight": "1em"})
                    for name in names
                ]
            )
            for day, names in days
        ]
    )


def _action_callbacks(app: Any, ctx: Context, gate: Gate) -> None:
    from dash import Input, Output, State, callback_context, no_update

    @app.callback(
        Output("confirm", "displayed"),
        Output("confirm", "message"),
        Output("pending", "data"),
        Output("action-result", "children", allow_duplicate=True),
        [Input(f"btn-{key}", "n_clicks") for key in BUTTONS],
        State("model", "value"),
        State("version", "value"),
        State("reason", "value"),
        State("force", "value"),
        State("config", "value"),
        State("strategy", "value"),
        prevent_initial_call=True,
    )
    def ask(*args: Any) -> tuple[Any, ...]:
        model, version, reason, force, config, strategy = args[len(BUTTONS) :]
        pressed = str(callback_context.triggered_id or "").removeprefix("btn-")
        if pressed not in BUTTONS:
            return no_update, no_update, no_update, no_update
        request = actions.ActionRequest(
            pressed,
            model or "",
            version or "",
            reason or "",
            "force" in (force or []),
            (config or "") if pressed == "create" else "",
            (strategy or "") if pressed in ("halt", "unhalt") else "",
        )
        asked = actions.question(request, ctx.settings.champion_alias)
        return True, asked, asdict(request), ""

    @app.callback(
        Output("action-result", "children"),
        Output("action-result", "className"),
        Output("refresh", "data"),
        Input("confirm", "submit_n_clicks"),
        State("pending", "data"),
        State("user", "value"),
        State("password", "value"),
        State("refresh", "data"),
        prevent_initial_call=True,
    )
    def act(_submitted: int, pending: dict[str, Any] | None, user: str, password: str, count: int):
        from flask import request

        if not pending:
            return "Nothing to do: press an action's button first.", "refused", no_update
        credentials = Credentials.from_request(user, password, dict(request.headers))
        outcome = actions.perform(
            ctx, gate, actions.ActionRequest(**_fields(pending)), _caller(credentials)
        )
        if outcome.status == 429:  # a throttled client gets no answer but the status
            _too_many(outcome)
        return outcome.sentence, "done" if outcome.ok else "refused", (count or 0) + 1


def _caller(credentials: Credentials) -> actions.Caller:
    """The request's credentials, address, Origin and Host."""
    from flask import request

    return actions.Caller(
        credentials,
        request.remote_addr or "",
        request.headers.get("Origin", ""),
        request.headers.get("Host", ""),
    )


def _too_many(outcome: actions.Outcome) -> None:
    from flask import abort, make_response

    answer = make_response({"ok": False, "sentence": outcome.sentence}, 429)
    answer.headers["Retry-After"] = str(outcome.retry_after)
    abort(answer)


def _fields(pending: dict[str, Any]) -> dict[str, Any]:
    """The action request's fields from the browser's store, typed."""
    return {
        "action": str(pending.get("action", "")),
        "model": str(pending.get("model") or ""),
        "version": str(pending.get("version") or ""),
        "reason": str(pending.get("reason") or ""),
        "force": bool(pending.get("force")),
        "config": str(pending.get("config") or ""),
        "strategy": str(pending.get("strategy") or ""),
    }


# Plain routes on the Flask server.


def _guard(server: Any, ctx: Context, gate: Gate) -> None:
    """The frame headers and the redaction on every answer; with anonymous viewing off,
    HTTP basic auth on every route but ``/healthz``."""
    from flask import Response, request

    @server.after_request
    def harden(response: Response) -> Response:
        forbid_framing(response.headers)
        if response.mimetype in REDACTED_TYPES and not response.direct_passthrough:
            body = response.get_data(as_text=True)
            safe = redact_credentials(body)
            if safe != body:
                response.set_data(safe)
        return response

    if ctx.settings.dashboard_anonymous_view:
        return

    @server.before_request
    def sign_in_to_view() -> Response | None:
        if request.path == "/healthz":
            return None
        credentials = Credentials.from_request("", "", dict(request.headers))
        principal, sentence, status = None, "Sign in to view the dashboard.", 401
        try:
            principal = gate.sign_in(credentials, request.remote_addr or "")
        except Refused as exc:
            sentence, status = str(exc), exc.status
            if exc.audit:
                actions.audit_refusal(
                    ctx, actions.ActionRequest("view"), sentence, _caller(credentials)
                )
        if principal is not None:
            return None
        answer = Response(sentence, status, mimetype="text/plain")
        if status == 401:
            answer.headers["WWW-Authenticate"] = 'Basic realm="mlops dashboard", charset="UTF-8"'
        return answer


def _routes(server: Any, ctx: Context, gate: Gate) -> None:
    from flask import Response, abort, jsonify, request

    @server.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @server.post("/api/actions")
    def api_actions() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(ok=False, sentence="The body must be a JSON object."), 400
        credentials = Credentials.from_request("", "", dict(request.headers))
        request_ = actions.ActionRequest(**_fields(body))
        outcome = actions.perform(ctx, gate, request_, _caller(credentials))
        answer = jsonify(ok=outcome.ok, sentence=outcome.sentence)
        if outcome.retry_after:
            answer.headers["Retry-After"] = str(outcome.retry_after)
        return answer, outcome.status

    @server.get("/api/metrics")
    def api_metrics() -> Any:
        return jsonify(metrics_rows(data.load_figures(ctx.engine).metrics))

    @server.get("/api/models")
    def api_models() -> Any:
        """Every version of every catalog model with its holdout and live figures: the
        rows ``mlops models list --output`` writes, from the same code."""
        from mlops.contracts.catalog import model_names
        from mlops.model_admin import inventory

        try:
            rows = inventory(
                ctx.mlflow,
                ctx.engine,
                model_names(ctx.settings, ctx.store),
                alias=ctx.settings.champion_alias,
            )
        except MlopsError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify([asdict(row) for row in rows])

    @server.get("/api/equity")
    def api_equity() -> Any:
        """Equity snapshots, of one ``broker``, ``account`` or ``strategy`` when given."""
        chosen = {k: request.args.get(k) or None for k in ("broker", "account", "strategy")}
        return jsonify(data.records(data.load_figures(ctx.engine, **chosen).equity))

    @server.get("/api/leaderboard")
    def api_leaderboard() -> Any:
        board = leaderboard.compute(ctx.engine)
        return jsonify(json.loads(json.dumps([asdict(r) for r in board], default=str)))

    @server.get("/backtests/<run_key>/chart")
    def backtest_chart(run_key: str) -> Any:
        found = _backtest_run(ctx, run_key)
        if found is None:
            abort(404, f"No backtest {run_key}.")
        try:
            body = ctx.store.get_bytes(found["chart_key"])
        except StoreError:
            abort(404, f"The chart of backtest {run_key} is missing.")
        return Response(body, mimetype="text/html")

    @server.get("/backtests/<run_key>/trades")
    def backtest_trades(run_key: str) -> Any:
        from mlops.store import get_parquet

        found = _backtest_run(ctx, run_key)
        if found is None:
            abort(404, f"No backtest {run_key}.")
        try:
            trades = get_parquet(
                ctx.store, data.backtest_trades_key(found["summary"], found["chart_key"])
            )
        except StoreError:
            abort(404, f"The trade list of backtest {run_key} is missing.")
        return Response(trades_page(run_key, found["summary"], trades), mimetype="text/html")

    @server.get("/reports/<day>/<name>")
    def report(day: str, name: str) -> Any:
        if not REPORT_NAME.match(f"{day}/{name}"):
            abort(404, "Reports are named like 2017-06-01/drift.html.")
        try:
            body = ctx.store.get_bytes(keys.monitoring_report_key(day, name))
        except StoreError:
            abort(404, f"No report {name} for {day}.")
        return Response(body, mimetype="text/html")


def _backtest_run(ctx: Context, run_key: str) -> Any:
    """The ``backtest_runs`` row of ``run_key`` (its summary and chart key), or None."""
    from sqlalchemy import select

    from mlops.db.schema import backtest_runs

    query = select(backtest_runs.c.summary, backtest_runs.c.chart_key).where(
        backtest_runs.c.run_key == run_key
    )
    with ctx.engine.connect() as conn:
        return conn.execute(query).mappings().first()


def trades_page(run_key: str, summary: str, trades: pd.DataFrame) -> str:
    """A backtest's trade list as a plain HTML page: its notes, then one row per fill."""
    from html import escape

    notes = json.loads(summary).get("notes") or []
    shown = trades.copy()
    for column in ("decided", "day", "entry_day"):
        if column in shown:
            shown[column] = pd.to_datetime(shown[column]).dt.strftime("%Y-%m-%d")
    counts = ", ".join(f"{n} {name}" for name, n in shown.groupby("simulation").size().items())
    title = f"Trades of backtest {run_key}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        + "".join(f"<p>{escape(n)}</p>" for n in notes)
        + f"<p>{len(shown)} fills ({escape(counts or 'none')}).</p>"
        + shown.to_html(index=False, na_rep="", classes="table trades", float_format=six)
        + "</body></html>"
    )


def metrics_rows(metrics: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per day, model, version and window (1: the session's own figures) with
    each metric as a column (JSON-ready)."""
    if metrics.empty:
        return []
    wide = metrics.pivot_table(
        index=["metric_date", "model_name", "model_version", "window_days"],
        columns="metric",
        values="value",
        aggfunc="last",
    ).reset_index()
    wide["metric_date"] = wide["metric_date"].dt.strftime("%Y-%m-%d")
    wide.columns.name = None
    return data.records(
        wide.sort_values(["metric_date", "model_name", "model_version", "window_days"])
    )
