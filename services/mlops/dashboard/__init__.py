"""``mlops dashboard``: the control plane, a Plotly Dash app over the database, the
object store and the MLflow registry.

What it shows: every model's and version's quality over time (MAPE, WMAPE, MAE, RMSE,
directional accuracy; one line per ``model:version``, the naive forecast dashed), the
champion against its challengers and the naive forecast, the models table (versions,
aliases, status, holdout against naive, Diebold-Mariano p-values, live figures), the
drift share with its calibrated threshold and how often each retrain trigger fired,
equity against buy-and-hold per strategy and broker account, the strategies' leaderboard
(:mod:`mlops.trading.leaderboard`), backtests, walk-forwards (headline
figures, equity against buy-and-hold, IC per retrain period, the champion timeline, the
report and the trades), retrain requests, the audit of model actions, stage runs and
links to the evidently reports.

What it does: promote, roll back, archive, pause, resume, retrain and the trading kill
switch, each after a confirmation and only for a signed-in user whose role may
(:mod:`mlops.access`: viewer, operator, admin from ``DASHBOARD_USERS``, or the older
shared ``DASHBOARD_TOKEN``; :mod:`mlops.dashboard.auth`: sign-in and throttle), through
the same functions as the CLI (:mod:`mlops.dashboard.actions`); every refusal audited.

Why Dash rather than Streamlit:

- Authorization of actions: a Dash action is a callback, an HTTP POST handled by Flask,
  so the user is checked on the server in the very function that acts, and the request's
  headers (bearer or basic auth) are at hand. Streamlit reruns a whole script over a
  websocket per interaction, with no request to authorize per action.
- Testing in a real browser: a Dash page is stable HTML with the ids we give it; selenium
  waits for an element or a text, and the browser's native confirm dialog is an alert it
  accepts. The Flask server is also testable without a browser (``app.server``).
- Image weight: Flask, Werkzeug and Plotly are in the monitor image already (MLflow and
  evidently need them); Dash adds its own package and a few small ones, and gunicorn
  serves it. Streamlit would add Tornado, Altair, pydeck, protobuf and more, and runs
  as its own server process (``streamlit run``) rather than as a WSGI app.
- Maintained: Dash is Plotly's, released every few weeks; it draws with plotly.js
  bundled in the package (served locally: no CDN, works offline).
"""

from __future__ import annotations

from mlops.dashboard.app import create_app, metrics_rows
from mlops.dashboard.data import load_figures

__all__ = ["create_app", "load_figures", "metrics_rows"]
