"""``mlops serve``: the API under uvicorn, the model fetched while the web stack loads.

Start-up is ordered for the time to ``/readyz`` 200: the holder's poller starts first, so
the registry calls, the download of the portable export and its load (network and disk
waits, mostly) run while this thread imports FastAPI and uvicorn and binds the port. The
app is given that holder, so ``/readyz`` answers 503 until the model is in, as before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys

from mlops.serving.model_holder import ModelHolder
from mlops.settings import Settings

log = logging.getLogger(__name__)

STARTUP_FAILURE = 3  # uvicorn's exit code when the server did not start


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API with uvicorn: one process, so one copy of the model."""
    # MLflow's client, where it is used, gets its time limits, retries and no progress
    # bars from mlops.tracking.connect (MLFLOW_TIMEOUT_SECONDS, MLFLOW_MAX_RETRIES).
    holder = ModelHolder(settings)
    holder.start()
    try:
        import uvicorn

        from mlops.serving.app import create_app

        app = create_app(settings, holder)
        host = host or settings.serve_host
        port = port or settings.serve_port
        log.info("Serving on http://%s:%d (champion of %s)", host, port, settings.model_name)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            workers=1,
            ws="none",  # no websocket route: skip importing a websockets implementation
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=10,
            # A kept-alive connection idle this long is closed (a slow body: limits.py).
            timeout_keep_alive=settings.serve_idle_timeout_seconds,
        )
        config.load()  # the event loop, HTTP protocol and lifespan code, imported now
        # The model may be in before the web stack is: what start-up made is moved out of
        # the garbage collector's reach here too (the holder does so at each swap), so
        # full collections stay short under load.
        gc.freeze()
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:  # the port could not be bound, say: as uvicorn.run exits
            sys.exit(STARTUP_FAILURE)
    finally:
        holder.stop()
