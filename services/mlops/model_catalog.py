"""Creating and deleting models: the stored catalog and the registry.

One implementation for ``mlops models create`` / ``delete`` and the dashboard's form.

* **create** checks a Ludwig YAML before anything is trained or written (it parses,
  Ludwig's schema and the pipeline's rules pass, and the portable export reproduces it:
  :func:`mlops.training.model_config.check_new`), then stores it in the object store's
  catalog (:mod:`mlops.contracts.catalog`), where ``mlops train --model NAME`` and ``train
  --all`` find it: the cluster's ConfigMap is not touched. A name of the bundled catalog
  is refused (a stored config never replaces a bundled one); a stored name with another
  config only with ``replace``; the same config again changes nothing.
* **delete** removes a version that is not the champion from the registry, or a whole
  model that has no champion: its registered model (every version) and its stored config.
  A model of the bundled catalog is not deleted whole (its config is the folder's, which
  this code does not change) nor is the trading model (``MODEL_NAME``).

Both hold the model's lock (:func:`mlops.db.locks.model_lock`, the one every registry
action takes), decide on what they read inside it, and write one audit row to
``model_actions`` (:mod:`mlops.model_admin`); a refusal is one sentence
(:class:`~mlops.errors.ConfigError`), audited too. Audit rows, predictions and monitoring
figures of a deleted model stay.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from mlops.contracts import catalog
from mlops.contracts.keys import stored_config_key
from mlops.contracts.models import (
    CHAMPION_STACK_TAG,
    champion,
    champion_stack,
    registered_tags,
    version_ref,
)
from mlops.db.locks import model_lock
from mlops.errors import ConfigError
from mlops.model_admin import REFUSALS, Action, record, record_refusal
from mlops.store import ObjectStore

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops.settings import Settings

CREATE, DELETE = "create", "delete"
# A model config is a few dozen lines; anything this long is not one.
MAX_CONFIG_BYTES = 64 * 1024


def create(
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    text: str,
    *,
    reason: str,
    actor: str,
    replace: bool = False,
    client: MlflowClient | None = None,
) -> Action:
    """Check ``text`` (a Ludwig YAML) and store it as model ``name``'s config (see the
    module doc); a refusal is audited, then raised. With ``client``, the registered model
    is made too, editable by ``MLFLOW_MODEL_EDITORS`` (:func:`open_in_registry`)."""
    try:
        done = _create(engine, store, settings, name, text, reason, actor, replace)
    except REFUSALS as exc:
        record_refusal(engine, CREATE, name, None, actor=actor, reason=str(exc))
        exc.audited = True
        raise
    if client is not None:
        open_in_registry(client, settings, name)
    return done


def open_in_registry(client: MlflowClient, settings: Settings, name: str) -> None:
    """Registered model ``name`` (made here when missing: behind MLflow's basic auth its
    maker, the dashboard's user, then manages it and may delete it), and ``EDIT`` on it for
    each user of ``MLFLOW_MODEL_EDITORS`` (training, which registers its versions; a
    non-admin may not even read a registered model it has no permission on)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    editors = [u.strip() for u in settings.mlflow_model_editors.split(",") if u.strip()]
    if not editors:
        return
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(client.tracking_uri)
    for user in editors:
        auth.grant_user_permission(user, "registered_model", name, "EDIT")


def _create(
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    text: str,
    reason: str,
    actor: str,
    replace: bool,
) -> Action:
    from mlops.training.model_config import check_new, input_names, output_name

    _check_name(name)
    data = text.encode()
    if not text.strip():
        raise ConfigError(f"The config of {name} is empty: give a Ludwig YAML.")
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"The config of {name} has {len(data)} bytes, more than {MAX_CONFIG_BYTES}: it is "
            "not a model config."
        )
    config = check_new(text, source=f"for {name}")  # before anything is written
    key = stored_config_key(name)
    digest = hashlib.sha256(data).hexdigest()
    with model_lock(engine, name):
        if name in catalog.bundled(settings):
            raise ConfigError(
                f"Model {name} is in the bundled catalog ({_folder(settings)}); a stored config "
                "never replaces it: choose another name."
            )
        before = store.get_bytes(key) if store.exists(key) else None
        if before is not None and before != data and not replace:
            raise ConfigError(
                f"Model {name} is already in the stored catalog with another config; nothing "
                "was changed (replace it with --replace, or choose another name)."
            )
        unchanged = before == data
        if not unchanged:
            store.put_bytes(key, data, "application/yaml")
        details: dict[str, Any] = {
            "key": key,
            "sha256": digest,
            "output": output_name(config),
            "inputs": input_names(config),
            "replaced": before is not None and not unchanged,
            "unchanged": unchanged,
        }
        why = reason or ("same config, unchanged" if unchanged else "created")
        return record(engine, Action(CREATE, name, None, actor, why, details))


def delete(
    client: MlflowClient,
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    version: str = "",
    *,
    reason: str,
    actor: str,
) -> Action:
    """Delete version ``version`` of ``name`` (never the champion), or without a version
    the whole model (no champion; see the module doc); a refusal is audited, then raised."""
    try:
        with model_lock(engine, name):
            if version:
                return _delete_version(client, engine, settings, name, version, reason, actor)
            return _delete_model(client, engine, store, settings, name, reason, actor)
    except REFUSALS as exc:
        record_refusal(engine, DELETE, name, version, actor=actor, reason=str(exc))
        exc.audited = True
        raise


def _delete_version(
    client: MlflowClient,
    engine: Engine,
    settings: Settings,
    name: str,
    version: str,
    reason: str,
    actor: str,
) -> Action:
    if registered_tags(client, name) is None:
        raise ConfigError(f"No registered model named {name!r}.")
    ref = version_ref(client, name, version)
    if ref is None:
        raise ConfigError(f"Model {name!r} has no version {version}.")
    alias = settings.champion_alias
    current = champion(client, name, alias)
    if current is not None and current.version == ref.version:
        raise ConfigError(
            f"Model {name} version {version} is the {alias}; promote or roll back to another "
            "version before deleting it."
        )
    stack = champion_stack(client, name)
    client.delete_model_version(name, ref.version)
    if ref.version in stack:  # a rollback never goes back to a version that is gone
        kept = ",".join(v for v in stack if v != ref.version)
        client.set_registered_model_tag(name, CHAMPION_STACK_TAG, kept)
    details = {"run_id": ref.run_id, "tags": ref.tags}
    return record(engine, Action(DELETE, name, ref.version, actor, reason or "deleted", details))


def _delete_model(
    client: MlflowClient,
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    reason: str,
    actor: str,
) -> Action:
    if name == settings.model_name:
        raise ConfigError(
            f"Model {name} is the trading model (MODEL_NAME); it is not deleted (delete its "
            "other versions with --version)."
        )
    if name in catalog.bundled(settings):
        raise ConfigError(
            f"Model {name} is in the bundled catalog ({_folder(settings)}), which cannot be "
            "changed from here; nothing was deleted (delete its versions with --version, pause "
            f"its training, or remove {name}.yaml from that folder or ConfigMap)."
        )
    key = stored_config_key(name)
    has_config = store.exists(key)
    registered = registered_tags(client, name) is not None
    if not has_config and not registered:
        raise ConfigError(f"No model named {name!r} in the registry or the stored catalog.")
    versions: list[str] = []
    if registered:
        current = champion(client, name, settings.champion_alias)
        if current is not None:
            raise ConfigError(
                f"Model {name} has a {settings.champion_alias} (version {current.version}); a "
                "model with a champion is not deleted (delete its other versions with --version)."
            )
        found = client.search_model_versions(f"name = '{name}'", max_results=10000)
        versions = sorted((str(mv.version) for mv in found), key=int)
        client.delete_registered_model(name)
    if has_config:
        store.delete(key)
    details = {"versions": versions, "registered": registered, "stored_config": has_config}
    return record(engine, Action(DELETE, name, None, actor, reason or "deleted", details))


def _check_name(name: str) -> None:
    if not catalog.NAME_PATTERN.match(name):
        raise ConfigError(
            f"{name[:70]!r} is not a model name: 1 to 63 lower-case letters, digits and dashes, "
            "starting with a letter or digit (it names the registry model and its config)."
        )


def _folder(settings: Settings) -> str:
    return str(settings.model_configs_dir or "the packaged models")
