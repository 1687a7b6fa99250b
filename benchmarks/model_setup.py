"""Shared by the serving and batch benchmarks: one trained model, and the data it scores.

``ensure_model(home)`` trains the packaged model config on the bundled sample up to
2017-05-31 with ``mlops`` itself (migrate, data-prep, train; ``TRAIN_EPOCHS`` epochs)
unless ``home`` already has a ``champion``. Training may not beat the naive forecast and
then leaves no champion: the alias is set on the new version here, since the benchmarks
measure speed, not skill. The registered version is downloaded once to
``home/bench-model-v<version>`` (an MLflow model folder; its ``model/`` subfolder is the
saved Ludwig model that ``ludwig serve`` takes).

``tracking_server(model)`` puts the same version behind a real MLflow tracking server, set
up as ``deployments/mlflow.yaml`` sets it up (its own registry, artifacts proxied by the
server with ``--serve-artifacts``), for benchmarks of what a pod sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

AS_OF = "2017-05-31"
VENV_BIN = Path(sys.executable).parent
LEAKY_PREFIXES = ("MLOPS_", "MLFLOW_", "STORE_", "S3_", "DATABASE_", "MODEL_", "SERVE_")


@dataclass(frozen=True)
class BenchModel:
    home: Path
    name: str
    version: str
    mlflow_dir: Path  # MLflow model folder (MLmodel, model/)
    ludwig_dir: Path  # the saved Ludwig model inside it


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without pipeline settings, rooted at ``home`` (embedded defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(LEAKY_PREFIXES)}
    env.update(MLOPS_HOME=str(home), LOG_LEVEL="WARNING", NO_PROXY="127.0.0.1,localhost")
    # mlflow models serve starts `uvicorn` from PATH.
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def _mlops(home: Path, *args: str, **extra: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "mlops"), *args],
        env=clean_env(home, **extra),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ensure_model(home: Path, epochs: int = 2) -> BenchModel:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["MLOPS_HOME"] = str(home)
    for key in [
        k for k in os.environ if k.upper().startswith(LEAKY_PREFIXES) and k != "MLOPS_HOME"
    ]:
        del os.environ[key]
    from mlops import tracking
    from mlops.contracts.models import champion
    from mlops.settings import load_settings

    settings = load_settings()
    client = tracking.connect(settings)
    ref = champion(client, settings.model_name, settings.champion_alias)
    if ref is None:
        print(f"Training a model in {home} (mlops migrate, data-prep, train) ...", flush=True)
        _mlops(home, "migrate")
        _mlops(home, "data-prep", "--as-of", AS_OF)
        _mlops(home, "train", "--as-of", AS_OF, TRAIN_EPOCHS=str(epochs))
        ref = champion(client, settings.model_name, settings.champion_alias)
        if ref is None:  # not better than naive: make it the champion anyway
            latest = max(
                client.search_model_versions(f"name='{settings.model_name}'"),
                key=lambda mv: int(mv.version),
            )
            client.set_registered_model_alias(
                settings.model_name, settings.champion_alias, latest.version
            )
            ref = champion(client, settings.model_name, settings.champion_alias)
    assert ref is not None
    return fetch_version(home, ref.name, ref.version, settings.tracking_uri)


def fetch_version(home: Path, name: str, version: str, tracking_uri: str) -> BenchModel:
    """The registered version's files, downloaded once to ``home/bench-model-v<version>``."""
    import mlflow
    from mlflow import MlflowClient

    target = home / f"bench-model-v{version}"
    if _model_folder(target) is None:
        source = MlflowClient(tracking_uri, tracking_uri).get_model_version_download_uri(
            name, version
        )
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=tracking_uri
        )
    folder = _model_folder(target)
    assert folder is not None, f"no MLmodel under {target}"
    return BenchModel(home, name, version, folder, folder / "model")


def _model_folder(target: Path) -> Path | None:
    """The downloaded version's MLflow model folder: the download holds the artifact's
    own folder (``model/``: MLmodel, the Ludwig model in ``model/model``, ``portable/``)."""
    for folder in (target / "model", target):
        if (folder / "MLmodel").is_file():
            return folder
    return None


@contextmanager
def tracking_server(model: BenchModel) -> Iterator[str]:
    """A local ``mlflow server`` (artifacts proxied) whose champion is ``model``'s version;
    yields its URL and stops it after. Its state is kept in ``model.home / "served"``."""
    folder = model.home / "served"
    folder.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(model.home)
    server = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("w"),
        start_new_session=True,
    )
    try:
        wait_http(f"{url}/health", process=server)
        _register_served(model, url)
        _warm_up(model, url)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def _register_served(model: BenchModel, url: str) -> None:
    """Log ``model``'s files as a run of the server and make it the champion (once)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlops.settings import load_settings

    settings = load_settings(MLOPS_HOME=str(model.home))
    served = MlflowClient(url, url)
    try:
        served.get_model_version_by_alias(model.name, settings.champion_alias)
        return
    except MlflowException:
        pass
    original = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    ref = original.get_model_version(model.name, model.version)
    run = original.get_run(ref.run_id)
    experiment = served.get_experiment_by_name("bench") or served.get_experiment(
        served.create_experiment("bench")
    )
    new = served.create_run(experiment.experiment_id, tags=run.data.tags)
    for key, value in run.data.metrics.items():
        served.log_metric(new.info.run_id, key, value)
    # The version's folder as registered: the one holding portable/ (and MLmodel, model/).
    served.log_artifacts(new.info.run_id, str(model.mlflow_dir), "model")
    served.set_terminated(new.info.run_id)
    served.create_registered_model(model.name)
    version = served.create_model_version(
        model.name,
        source=f"{new.info.artifact_uri}/model",
        run_id=new.info.run_id,
        tags=dict(ref.tags),
    )
    served.set_registered_model_alias(model.name, settings.champion_alias, version.version)


def _warm_up(model: BenchModel, url: str) -> None:
    """One download through the server's artifact proxy: its first one imports the
    artifact store's code, which would otherwise be charged to the first server measured."""
    import mlflow
    from mlflow import MlflowClient

    from mlops.settings import load_settings

    settings = load_settings(MLOPS_HOME=str(model.home))
    served = MlflowClient(url, url)
    ref = served.get_model_version_by_alias(model.name, settings.champion_alias)
    source = served.get_model_version_download_uri(model.name, ref.version)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{source}/portable", dst_path=tmp, tracking_uri=url
        )


def features(home: Path):  # -> pd.DataFrame
    """The scorable rows (no indicator warm-up) of the newest dataset in ``home``."""
    from mlops.context import open_context
    from mlops.contracts import datasets
    from mlops.settings import load_settings

    ctx = open_context(load_settings(MLOPS_HOME=str(home)))
    _, frame = datasets.load(ctx.store, datasets.latest_version(ctx.engine, None))
    ctx.engine.dispose()
    return frame[~frame["warmup"]].reset_index(drop=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 180.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"The server exited with {process.returncode} before {url} answered."
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout} s.")
        time.sleep(0.25)


class Postgres:
    """A throwaway PostgreSQL on 127.0.0.1 (initdb in a temporary folder), or None."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        candidates = [Path("/usr/lib/postgresql/15/bin")]
        if shutil.which("initdb"):
            candidates.append(Path(shutil.which("initdb")).resolve().parent)  # type: ignore[arg-type]
        bin_dir = next((c for c in candidates if (c / "initdb").exists()), None)
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb) not found; pass --database-url."
            )
        self.prefix: list[str] = []
        self.base = Path(tempfile.mkdtemp(prefix="mlops-bench-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import pwd

            user = "postgres" if _has_user("postgres") else "nobody"
            self.prefix = ["runuser", "-u", user, "--"]
            entry = pwd.getpwnam(user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.bin_dir = bin_dir
        self.port = free_port()
        data = self.base / "data"
        run = lambda *a: subprocess.run(  # noqa: E731
            [*self.prefix, *map(str, a)], check=True, capture_output=True, cwd="/"
        )
        run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run(bin_dir / "pg_ctl", "-D", data, "-l", self.base / "log", "-o", options, "-w", "start")
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        import shutil

        subprocess.run(
            [
                *self.prefix,
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.base / "data"),
                "-m",
                "fast",
                "stop",
            ],
            capture_output=True,
            cwd="/",
        )
        shutil.rmtree(self.base, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
