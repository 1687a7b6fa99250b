"""Serve the dashboard with gunicorn: one worker process, a few threads.

The command opens the context first (a missing database or an old schema is one
sentence before anything listens), then empties the engine's pool: the worker makes its
own connections after the fork, none is shared between processes.
"""

from __future__ import annotations

from typing import Any

from mlops.context import Context


def serve(ctx: Context, host: str, port: int, threads: int = 4) -> None:
    """Run until stopped (SIGTERM or Ctrl-C)."""
    from gunicorn.app.base import BaseApplication

    ctx.engine.dispose()

    class DashboardServer(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                # No worker timeout: a page's request may wait on a slow registry; the
                # gthread worker's main loop keeps answering meanwhile. (Work such as a
                # retrain never runs in a request: it is a request row, mlops.action_requests.)
                "timeout": 0,
                "graceful_timeout": 10,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from mlops.dashboard.app import create_app

            return create_app(ctx).server

    DashboardServer().run()
