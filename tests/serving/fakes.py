"""Stand-ins for the serving unit tests: a predictor without torch, a holder without a
registry, and a request without a server."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import numpy as np
from starlette.requests import Request

# The packaged config's shape: numbers and a category; close is not an input.
FEATURES = {"rsi_14": "number", "return_1d": "number", "symbol": "category"}
# Another version: other inputs, close among them, a binary feature (taken as text).
OTHER_FEATURES = {"close": "number", "log_volume": "number", "sector": "category", "flag": "binary"}


class FakePredictor:
    """Sums the numbers (times 0.001) and the lengths of the texts (times 0.0001)."""

    kind = "fast"
    config: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self, input_features: Mapping[str, str], target: str = "next_return") -> None:
        self.input_features = dict(input_features)
        self.target = target
        self.calls: list[dict[str, list[Any]]] = []

    def predict_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        self.calls.append({k: list(v) for k, v in columns.items()})
        rows = len(next(iter(columns.values())))
        out = np.zeros(rows)
        for name, kind in self.input_features.items():
            if kind == "number":
                out = out + np.asarray(columns[name], dtype=np.float64) * 1e-3
            else:
                out = out + np.array([len(str(v)) for v in columns[name]]) * 1e-4
        return out

    def expected(self, record: Mapping[str, Any]) -> float:
        return float(self.predict_columns({k: [record[k]] for k in self.input_features})[0])

    def predict_frame(self, frame: Any) -> np.ndarray:
        return self.predict_columns({k: list(frame[k]) for k in self.input_features})

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.predict_columns({k: [r[k] for r in records] for k in self.input_features})

    def describe(self) -> dict[str, Any]:
        return {"predictor": self.kind, "target": self.target, "inputs": self.input_features}


class Registry:
    """A registry of fake versions whose champion the test moves."""

    def __init__(self, versions: Mapping[str, FakePredictor]) -> None:
        self.versions = dict(versions)
        self.champion: str | None = None
        self.archived: set[str] = set()  # versions tagged mlops_status=archived

    def holder(self, settings: Any) -> Any:
        from mlops.contracts.models import ModelRef
        from mlops.serving.model_holder import LoadedModel, ModelHolder

        def lookup() -> ModelRef | None:
            if self.champion is None:
                return None
            archived = self.champion in self.archived
            tags = {"mlops_status": "archived"} if archived else {}
            return ModelRef("stock-close", self.champion, f"run-{self.champion}", tags)

        def loader(ref: ModelRef) -> LoadedModel:
            loaded_at = datetime(2024, 1, 2, tzinfo=UTC)
            info = {"run_id": ref.run_id, "holdout_metrics": {"mae": 0.5}}
            return LoadedModel(ref, self.versions[ref.version], info, loaded_at, 0.25)

        return ModelHolder(settings, lookup=lookup, loader=loader)


RECORD = {"rsi_14": 55.0, "return_1d": 0.01, "symbol": "AAPL", "close": 100.0}


def request(
    body: Any = None,
    *,
    content_type: str | None = "application/json",
    form: Mapping[str, str] | None = None,
    raw: bytes | None = None,
    path: str = "/predict",
) -> Request:
    """A POST request as the handlers receive it (JSON ``body``, a urlencoded ``form``,
    or ``raw`` bytes)."""
    if form is not None:
        data = urlencode(form).encode()
        content_type = "application/x-www-form-urlencoded"
    elif raw is not None:
        data = raw
    else:
        data = json.dumps(body).encode()
    headers = [(b"content-length", str(len(data)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "query_string": b"",
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    return Request(scope, receive)
