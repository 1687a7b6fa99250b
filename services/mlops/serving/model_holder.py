"""The model the server answers with, and its hot reload from the MLflow registry.

A background thread asks the registry which version the ``champion`` alias points at.
When it moves, the thread downloads and loads the new version while requests keep being
answered by the old one, then swaps the reference in one assignment: a request reads
``holder.current`` once and uses that model to the end, so none fails or waits during a
swap. When the registry cannot be read, the loaded model keeps serving and the failure
is reported (``/readyz`` details, metrics) until the registry answers again. An alias on
an archived version is never loaded: the loaded model keeps answering, but the server
reports not ready, with the sentence that says how to move the alias, until it moves.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.contracts.models import ModelRef, archived_champion, is_archived
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.contracts.portable import Predictor  # NumPy: imported by the poller
    from mlops.serving.registry import Registry

log = logging.getLogger(__name__)

# While no model is loaded, look again at least this often.
NOT_READY_POLL_SECONDS = 5.0
# What public answers say of a registry failure (its text, which may name hosts or
# paths, goes to the log).
REGISTRY_ERROR = "the model registry cannot be read; the server log says why"


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded and ready to answer."""

    ref: ModelRef
    predictor: Predictor
    info: dict[str, Any]
    loaded_at: datetime
    load_seconds: float

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version


@dataclass
class RegistryStatus:
    """What the last looks at the registry found."""

    reachable: bool | None = None  # None: not asked yet
    champion_version: str | None = None
    last_checked_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    failures_total: int = 0
    checks_total: int = 0

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The status; the error's own text only with ``details`` (the log has it)."""
        error = self.last_error
        if error is not None and not details:
            error = REGISTRY_ERROR
        return {
            "reachable": self.reachable,
            "champion_version": self.champion_version,
            "last_checked_at": _iso(self.last_checked_at),
            "last_success_at": _iso(self.last_success_at),
            "last_error": error,
            "consecutive_failures": self.consecutive_failures,
        }


@dataclass
class ReloadStatus:
    loading_version: str | None = None
    last_error: str | None = None
    failed_version: str | None = None
    reloads_total: int = 0
    failures_total: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, *, details: bool = False) -> dict[str, Any]:
        """The status; the error's own text only with ``details`` (the log has it)."""
        error = self.last_error
        if error is not None and not details:
            error = f"version {self.failed_version} cannot be loaded; the server log says why"
        return {
            "loading_version": self.loading_version,
            "failed_version": self.failed_version,
            "last_error": error,
            "reloads": self.reloads_total,
            "history": self.history[-10:],
        }


Lookup = Callable[[], ModelRef | None]
Loader = Callable[[ModelRef], LoadedModel]


class ModelHolder:
    """Holds the current model; ``start`` polls the registry in a daemon thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_seconds: float | None = None,
        lookup: Lookup | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.settings = settings
        self.poll_seconds = float(poll_seconds or settings.serve_poll_seconds)
        self._client: Registry | None = None
        self._lookup = lookup or self._registry_lookup
        self._loader = loader or self._registry_load
        self._current: LoadedModel | None = None
        self._previous: LoadedModel | None = None  # kept for an instant rollback
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.registry = RegistryStatus()
        self.reload = ReloadStatus()
        # Why the champion alias is not followed (it points at an archived version).
        self.refusal: str | None = None
        self.started_at = datetime.now(UTC)

    # What requests read.

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        """A model is loaded and it is the one the alias means (see ``refusal``)."""
        return self._current is not None and self.refusal is None

    # The poller.

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # never let the poller die
                log.exception("Model poll failed unexpectedly")
            wait = (
                self.poll_seconds if self.ready else min(self.poll_seconds, NOT_READY_POLL_SECONDS)
            )
            self._stop.wait(wait)

    def poll_once(self) -> bool:
        """Look at the registry once; load and swap in a new champion. True when swapped."""
        with self._poll_lock:
            now = datetime.now(UTC)
            self.registry.last_checked_at = now
            self.registry.checks_total += 1
            try:
                ref = self._lookup()
            except Exception as exc:
                self._registry_failed(exc)
                return False
            self._registry_answered(now, ref)
            self._forget_stale_failure(ref)
            if ref is None:
                if self._current is not None:
                    log.warning(
                        "Model %s has no %r version any more; still serving version %s.",
                        self.settings.model_name,
                        self.settings.champion_alias,
                        self._current.version,
                    )
                return False
            if self._refused(ref):
                return False
            if _same(self._current, ref):
                return False
            return self._swap_in(ref)

    def _refused(self, ref: ModelRef) -> bool:
        """An archived champion is not loaded; the refusal is reported until it moves."""
        if not is_archived(ref):
            if self.refusal is not None:
                log.info(
                    "Model %s's %r alias no longer points at an archived version.",
                    ref.name,
                    self.settings.champion_alias,
                )
            self.refusal = None
            return False
        sentence = archived_champion(ref, self.settings.champion_alias)
        if self.refusal != sentence:
            serving = f"version {self._current.version}" if self._current else "nothing"
            log.error("%s Still serving %s; not ready until it moves.", sentence, serving)
        self.refusal = sentence
        return True

    def _swap_in(self, ref: ModelRef) -> bool:
        """Load ``ref`` (or take back the previous model) and make it the current one."""
        current, previous = self._current, self._previous
        if previous is not None and _same(previous, ref):
            loaded: LoadedModel | None = previous  # rolled back: no need to load it again
        else:
            loaded = self._load(ref)
        if loaded is None:
            return False
        self._previous, self._current = current, loaded  # the swap: one assignment each
        # Move what is alive now (libraries, the model) out of the garbage collector's
        # reach, so its full collections stay short and do not stall requests. (No
        # gc.collect() first: that would be the stall.)
        gc.freeze()
        self.reload.reloads_total += 1
        self.reload.history.append(
            {
                "version": loaded.version,
                "at": _iso(datetime.now(UTC)),
                "from": current.version if current else None,
            }
        )
        log.info(
            "Serving %s version %s (%s predictor)%s.",
            loaded.name,
            loaded.version,
            loaded.predictor.kind,
            f", was version {current.version}" if current else "",
        )
        return True

    def _forget_stale_failure(self, ref: ModelRef | None) -> None:
        """A load failure is reported while its version is the champion; once the alias
        points elsewhere (back to the loaded version, say), it is history."""
        failed = self.reload.failed_version
        if failed is None or (ref is not None and ref.version == failed):
            return
        log.info(
            "Version %s, which could not be loaded, is no longer the %r version.",
            failed,
            self.settings.champion_alias,
        )
        self.reload.failed_version = None
        self.reload.last_error = None

    def _load(self, ref: ModelRef) -> LoadedModel | None:
        self.reload.loading_version = ref.version
        try:
            loaded = self._loader(ref)
        except Exception as exc:
            self.reload.failures_total += 1
            self.reload.last_error = f"version {ref.version}: {exc}"
            if self.reload.failed_version != ref.version:
                log.error("Model %s version %s cannot be loaded: %s", ref.name, ref.version, exc)
            self.reload.failed_version = ref.version
            return None
        finally:
            self.reload.loading_version = None
        self.reload.last_error = None
        self.reload.failed_version = None
        return loaded

    def _registry_answered(self, now: datetime, ref: ModelRef | None) -> None:
        if not self.registry.reachable and self.registry.reachable is not None:
            log.info("The model registry answers again.")
        self.registry.reachable = True
        self.registry.last_success_at = now
        self.registry.last_error = None
        self.registry.consecutive_failures = 0
        self.registry.champion_version = ref.version if ref else None

    def _registry_failed(self, exc: Exception) -> None:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.registry.reachable is not False:
            log.warning(
                "The model registry cannot be read (%s); still serving %s.",
                message,
                f"version {self._current.version}" if self._current else "nothing",
            )
        self.registry.reachable = False
        self.registry.last_error = message
        self.registry.consecutive_failures += 1
        self.registry.failures_total += 1

    # The registry (MLflow): connected on the poller's first look, so the imports it
    # takes (requests, or MLflow's client) happen there and not before the port opens.

    def _registry(self) -> Registry:
        if self._client is None:
            from mlops.serving.registry import connect

            self._client = connect(self.settings)
        return self._client

    def _registry_lookup(self) -> ModelRef | None:
        return self._registry().champion(self.settings.model_name, self.settings.champion_alias)

    def _registry_load(self, ref: ModelRef) -> LoadedModel:
        from mlops.serving.registry import version_info

        registry = self._registry()
        began = time.perf_counter()
        # The run is read while the model downloads: one registry round trip less.
        with ThreadPoolExecutor(1, thread_name_prefix="model-info") as pool:
            info = pool.submit(version_info, registry, ref)
            predictor = registry.predictor(ref)
            return LoadedModel(
                ref=ref,
                predictor=predictor,
                info=info.result(),
                loaded_at=datetime.now(UTC),
                load_seconds=round(time.perf_counter() - began, 3),
            )


def _same(loaded: LoadedModel | None, ref: ModelRef) -> bool:
    return loaded is not None and (loaded.name, loaded.version) == (ref.name, ref.version)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
