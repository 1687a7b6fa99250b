"""The API's Prometheus metrics (``GET /metrics``), in a registry of their own per app.

* ``mlops_serve_requests_total`` (endpoint, method, status) and
  ``mlops_serve_request_duration_seconds`` (endpoint), counted by
  :class:`MetricsMiddleware` for every HTTP request (unknown paths as ``other``);
* ``mlops_serve_client_disconnects_total`` (endpoint): requests whose client went away
  before its body was read (they are not in ``mlops_serve_requests_total``: no answer was
  given, and the fault is neither the request's, a 4xx, nor the server's, a 5xx);
* ``mlops_serve_predictions_total`` (endpoint, model_version): rows predicted;
* the model and registry state, read from the holder at scrape time
  (:class:`HolderCollector`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from starlette.requests import ClientDisconnect

from mlops.serving.model_holder import ModelHolder

ENDPOINTS = ("/predict", "/batch_predict", "/healthz", "/readyz", "/metrics", "/model")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class ServeMetrics:
    """Prometheus metrics of one app, in their own registry."""

    def __init__(self, holder: ModelHolder) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Histogram

        prometheus_client.disable_created_metrics()  # no *_created series beside each counter
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_serve_requests",
            "HTTP requests answered, by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_serve_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlops_serve_predictions",
            "Rows predicted, by endpoint and model version.",
            ["endpoint", "model_version"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "mlops_serve_client_disconnects",
            "Requests whose client went away before they were answered, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.registry.register(HolderCollector(holder))
        self._latency_children = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self._latency_children[endpoint].observe(seconds)

    def count_disconnect(self, endpoint: str) -> None:
        self.disconnects.labels(endpoint).inc()

    def count_predictions(self, endpoint: str, model_version: str, rows: int) -> None:
        self.predictions.labels(endpoint, model_version).inc(rows)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class HolderCollector:
    """The model and registry state, read at scrape time."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self._model()
        yield from self._registry()
        yield from self._reloads()

    def _model(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        current = self.holder.current
        yield GaugeMetricFamily(
            "mlops_serve_model_loaded",
            "1 when a model is loaded.",
            value=float(current is not None),
        )
        info = GaugeMetricFamily(
            "mlops_serve_model_info",
            "The model answering requests (value 1).",
            labels=["model_name", "model_version", "run_id", "predictor"],
        )
        version = GaugeMetricFamily(
            "mlops_serve_model_version", "Registry version number of the model answering."
        )
        if current is not None:
            info.add_metric(
                [current.name, current.version, current.ref.run_id, current.predictor.kind], 1.0
            )
            version.add_metric([], float(current.version) if current.version.isdigit() else -1.0)
        yield info
        yield version

    def _registry(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        registry = self.holder.registry
        yield GaugeMetricFamily(
            "mlops_serve_registry_up",
            "1 when the last look at the model registry succeeded.",
            value=1.0 if registry.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "mlops_serve_registry_consecutive_failures",
            "Failed looks at the registry since the last success.",
            value=float(registry.consecutive_failures),
        )
        last = GaugeMetricFamily(
            "mlops_serve_registry_last_success_timestamp_seconds",
            "When the registry last answered (Unix time).",
        )
        if registry.last_success_at is not None:
            last.add_metric([], registry.last_success_at.timestamp())
        yield last
        yield CounterMetricFamily(
            "mlops_serve_registry_failures",
            "Looks at the registry that failed.",
            value=float(registry.failures_total),
        )

    def _reloads(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        reload = self.holder.reload
        yield CounterMetricFamily(
            "mlops_serve_model_reloads",
            "Models swapped in (the first load included).",
            value=float(reload.reloads_total),
        )
        yield CounterMetricFamily(
            "mlops_serve_model_load_failures",
            "Versions that could not be loaded.",
            value=float(reload.failures_total),
        )


class MetricsMiddleware:
    """Counts and times every HTTP request (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            # Nobody to answer: counted apart, and not raised on (uvicorn would log it as
            # a failure of the app).
            self.metrics.count_disconnect(endpoint)
            return
        except BaseException:
            self._observe(endpoint, scope, status, began)
            raise
        self._observe(endpoint, scope, status, began)

    def _observe(self, endpoint: str, scope: dict[str, Any], status: int, began: float) -> None:
        seconds = time.perf_counter() - began
        self.metrics.observe(endpoint, scope.get("method", ""), status, seconds)
