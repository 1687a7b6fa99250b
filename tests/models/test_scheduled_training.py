"""Scheduled training skips paused models: the demo's retraining, on a real registry."""

from __future__ import annotations

from mlops import model_admin
from mlops.demo import scheduled_training

from .conftest import Registry


def test_the_demo_retrains_every_catalog_model_but_the_paused_ones(
    registry: Registry, catalog_dir
) -> None:
    from mlops.context import open_context
    from mlops.settings import load_settings

    other = f"{registry.name}-b"
    folder = catalog_dir(registry.name, other)
    settings = load_settings(
        MLOPS_HOME=str(registry.settings.mlops_home),
        MLFLOW_TRACKING_URI=registry.settings.tracking_uri,
        MODEL_NAME=registry.name,
        MODEL_CONFIGS_DIR=str(folder),
    )
    ctx = open_context(settings)
    asked: list[str] = []

    def train(name: str) -> str:
        asked.append(name)
        return f"trained {name}"

    registry.register(0.010, 0.012)
    assert scheduled_training(ctx, train) == [
        (registry.name, f"trained {registry.name}"),
        (other, f"trained {other}"),
    ]
    model_admin.set_paused(
        registry.client, ctx.engine, registry.name, True, reason="hold", actor="cli:t"
    )
    asked.clear()
    assert [name for name, _ in scheduled_training(ctx, train)] == [other]
    assert asked == [other]
    model_admin.set_paused(
        registry.client, ctx.engine, registry.name, False, reason="go", actor="cli:t"
    )
    asked.clear()
    scheduled_training(ctx, train)
    assert asked == [registry.name, other]
    ctx.engine.dispose()
