"""Who is who: every pod's Postgres role, MinIO user and MLflow user, and what each may do.

test_manifest_run.py runs the pods with these identities against Postgres (grants
enforced), moto (the MinIO policies enforced) and MLflow behind basic auth. The policies
are also checked here statically, against the object-store keys each stage uses
(services/mlops/contracts/keys.py), with a small evaluator of the IAM subset they use.
"""

from __future__ import annotations

import fnmatch
import json
from datetime import date

import pytest

from mlops.contracts import keys
from mlops.db import roles

from .manifests import (
    PIPELINE_CONFIG,
    Doc,
    config_maps,
    containers,
    doc,
    env_of,
    mlops_containers,
    pod_template,
    secret_key,
    secret_volume_items,
    workloads,
)

DAY = date(2017, 5, 31)
BUCKET = config_maps()[PIPELINE_CONFIG]["S3_BUCKET"]
MLFLOW_BUCKET = "mlflow"

# Workload -> (Postgres role, MinIO user, MLflow user): the design, in one table.
EXPECTED = {
    "mlops-migrate": ("mlops", None, None),
    "mlops-data-prep": ("mlops_data_prep", "data-prep", None),
    "mlops-train": ("mlops_train", "train", "mlops-train"),
    "mlops-train-weekly": ("mlops_train", "train", "mlops-train"),
    # The walk-forward trains as training does (never registering), with its identities.
    "mlops-walk-forward-plan": ("mlops_train", "train", "mlops-train"),
    "mlops-walk-forward": ("mlops_train", "train", "mlops-train"),
    "mlops-walk-forward-finalize": ("mlops_train", "train", "mlops-train"),
    "mlops-batch-infer": ("mlops_batch_infer", "batch-infer", "mlops-batch-infer"),
    "mlops-trade": ("mlops_trade", "trade", None),
    "mlops-monitor": ("mlops_monitor", "monitor", "mlops-monitor"),
    "mlops-daily": ("mlops_orchestrator", None, None),
    "mlops-requests": ("mlops_orchestrator", None, None),
    "mlops-serve": (None, None, "mlops-serve"),
    "mlops-dashboard": ("mlops_dashboard", "dashboard", "mlops-dashboard"),
    # pg_dump (its init container, as the same role) and the upload of the dump.
    "mlops-backup": ("mlops_backup", "backup", None),
}


def _ids(items: list[Doc]) -> list[str]:
    return [d.rel for d in items]


def _mlops_workloads() -> list[Doc]:
    return [d for d in workloads() if any(c["image"].startswith("mlops-") for c in containers(d))]


def _minio_users() -> dict[str, tuple[str, str]]:
    """The bucket Job's users: name -> (access-key Secret key, secret-key Secret key)."""
    items = secret_volume_items(doc("Job", "mlops-minio-buckets"))
    names = {path.split("/")[1] for path in items if path.startswith("users/")}
    return {n: (items[f"users/{n}/access-key"], items[f"users/{n}/secret-key"]) for n in names}


def _identity(container: dict) -> tuple[str | None, str | None, str | None]:
    env = env_of(container)
    pg = env.get("PGUSER", {}).get("value")
    access = secret_key(env["AWS_ACCESS_KEY_ID"]) if "AWS_ACCESS_KEY_ID" in env else None
    users = {access_key: name for name, (access_key, _) in _minio_users().items()}
    minio = users.get(access) if access else None
    if access:
        assert access in users, f"{access} is no MinIO user of the bucket Job"
    mlflow = env.get("MLFLOW_TRACKING_USERNAME", {}).get("value")
    return pg, minio, mlflow


def test_every_mlops_workload_has_the_identities_of_its_purpose() -> None:
    seen = {}
    for item in _mlops_workloads():
        if item.name in ("mlops-mlflow", "mlops-mlflow-users"):
            continue
        (c,) = pod_template(item)["spec"]["containers"]
        seen[item.name] = _identity(c)
    assert seen == EXPECTED


# Workloads of one purpose: training, its schedule and the walk-forward (which trains).
TRAINING = {
    "mlops-train-weekly",
    "mlops-walk-forward-plan",
    "mlops-walk-forward",
    "mlops-walk-forward-finalize",
}


def test_no_two_purposes_share_a_credential() -> None:
    """Each Postgres role, MinIO user and MLflow user belongs to one purpose; the logins
    for people (mlops_reader, mlops-reader) belong to no workload."""
    for column, service in enumerate(("Postgres role", "MinIO user", "MLflow user")):
        purposes: dict[str, set[str]] = {}
        for workload, identities in EXPECTED.items():
            if identities[column] is not None:
                purpose = "mlops-train" if workload in TRAINING else workload
                # The daily run and the request controller: the one orchestrator.
                if workload in ("mlops-daily", "mlops-requests"):
                    purpose = "orchestrator"
                purposes.setdefault(identities[column], set()).add(purpose)
        shared = {name: sorted(p) for name, p in purposes.items() if len(p) > 1}
        assert shared == {}, f"{service}s shared by several purposes"
    used = {name for identities in EXPECTED.values() for name in identities}
    assert not used & {"mlops_reader", "mlops-reader"}


def test_the_backup_dumps_both_databases_as_the_backup_role_from_the_servers_image() -> None:
    """pg_dump must be as new as the server: the init containers run the server's image,
    with the role and password of the mlops container, one per database (the
    application's, MLflow's), and the mlops container uploads both dumps."""
    cronjob = doc("CronJob", "mlops-backup")
    dumps = pod_template(cronjob)["spec"]["initContainers"]
    (server,) = containers(doc("StatefulSet", "mlops-postgres"))
    (mlops,) = pod_template(cronjob)["spec"]["containers"]
    files = {}
    for dump in dumps:
        assert dump["image"] == server["image"]
        for name in ("PGUSER", "PGPASSWORD"):
            assert env_of(dump)[name] == env_of(mlops)[name]
        files[env_of(dump)["PGDATABASE"]["value"]] = dump["args"][-1].removeprefix("--file=")
    key = secret_key(env_of(dumps[0])["PGPASSWORD"])
    assert secret_volume_items(doc("Job", "mlops-migrate"))["mlops_backup"] == key
    assert mlops["args"] == [
        "backup", "--dump-file", files["mlops"], "--dump-file", f"mlflow={files['mlflow']}"
    ]  # fmt: skip
    # The migrate Job grants the backup role its reads on MLflow's database, as its owner.
    (migrate,) = containers(doc("Job", "mlops-migrate"))
    backend = next(
        a for a in containers(doc("Deployment", "mlops-mlflow"))[0]["args"]
        if a.startswith("--backend-store-uri=")
    )  # fmt: skip
    assert env_of(migrate)[roles.MLFLOW_DATABASE_ENV]["value"] == backend.split("=", 1)[1]
    password = secret_key(env_of(migrate)[roles.MLFLOW_PASSWORD_ENV])
    assert password == "POSTGRES_MLFLOW_PASSWORD"
    assert "mlops_backup" in roles.MLFLOW_DATABASE_READERS


@pytest.mark.parametrize("pair", list(mlops_containers()), ids=lambda p: p[0].rel)
def test_each_credential_is_the_one_its_user_was_created_with(pair) -> None:
    item, c = pair
    env = env_of(c)
    # Postgres: the password of PGUSER is the file the migrate Job creates that role from.
    if "PGUSER" in env:
        role, key = env["PGUSER"]["value"], secret_key(env["PGPASSWORD"])
        if role == "mlops":
            assert key == "POSTGRES_MLOPS_PASSWORD"
        else:
            assert role in roles.ROLES
            assert secret_volume_items(doc("Job", "mlops-migrate"))[role] == key, item
    else:
        assert "PGPASSWORD" not in env, f"{item}: PGPASSWORD without PGUSER"
    # MinIO: both keys of one user of the bucket Job.
    if "AWS_ACCESS_KEY_ID" in env:
        pair_keys = (secret_key(env["AWS_ACCESS_KEY_ID"]), secret_key(env["AWS_SECRET_ACCESS_KEY"]))
        assert pair_keys in _minio_users().values(), item
    # MLflow: the users Job creates that user from that password.
    if "MLFLOW_TRACKING_USERNAME" in env:
        user = env["MLFLOW_TRACKING_USERNAME"]["value"]
        items = secret_volume_items(doc("Job", "mlops-mlflow-users"))
        assert items[f"users/{user}"] == secret_key(env["MLFLOW_TRACKING_PASSWORD"]), item
        for name in (
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
            "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
        ):
            assert env[name]["value"] == "false", f"{item}: artifacts through MLflow only"


def test_serve_reads_only_and_the_dashboard_writes_only_what_its_actions_need() -> None:
    (serve,) = containers(doc("Deployment", "mlops-serve"))
    keys_used = {secret_key(e) for e in env_of(serve).values()} - {None}
    assert keys_used == {"MLFLOW_SERVE_PASSWORD", "SERVE_API_TOKEN", "SERVE_ADMIN_TOKEN"}
    assert not secret_volume_items(doc("Deployment", "mlops-serve"))
    (dash,) = containers(doc("Deployment", "mlops-dashboard"))
    keys_used = {secret_key(e) for e in env_of(dash).values()} - {None}
    assert keys_used == {
        "POSTGRES_DASHBOARD_PASSWORD",
        "MINIO_DASHBOARD_ACCESS_KEY",
        "MINIO_DASHBOARD_SECRET_KEY",
        "MLFLOW_DASHBOARD_PASSWORD",
        "DASHBOARD_USERS",
        "DASHBOARD_TOKEN",
    }
    # The role reads everything and writes the audit of its actions, the kill switch and
    # the alerts these send; the MinIO policy reads reports and changes nothing but the
    # stored catalog (models create / delete); the MLflow user edits the catalog's models.
    writes = {t for t, p in roles.ROLES["mlops_dashboard"].items() if p != roles.READ}
    assert writes == {"model_actions", "trading_halts", "alerts", "action_requests"}
    # It asks for work (a new request), never says how a request went (no UPDATE).
    assert roles.ROLES["mlops_dashboard"]["action_requests"] == ("SELECT", "INSERT")
    assert roles.ROLES["mlops_orchestrator"]["action_requests"] == ("SELECT", "UPDATE")
    assert all(p == roles.READ for p in roles.ROLES["mlops_reader"].values())
    for statement in _policy("dashboard")["Statement"]:
        if statement["Action"] != ["s3:GetObject"]:
            catalog = [f"arn:aws:s3:::{BUCKET}/{keys.MODEL_CATALOG_PREFIX}/*"]
            assert statement["Resource"] in (catalog, [f"arn:aws:s3:::{BUCKET}"])
    mlflow_users = {
        e["name"]: e.get("value") for e in containers(doc("Job", "mlops-mlflow-users"))[0]["env"]
    }
    assert (
        mlflow_users["MLFLOW_EDITOR"]
        == "mlops-train"
        != env_of(serve)["MLFLOW_TRACKING_USERNAME"]["value"]
    )
    editors = mlflow_users["MLFLOW_MODEL_EDITORS"].split(",")
    managers = mlflow_users["MLFLOW_MODEL_MANAGERS"].split(",")
    assert (editors, managers) == (["mlops-train"], ["mlops-dashboard"])
    assert env_of(serve)["MLFLOW_TRACKING_USERNAME"]["value"] not in editors + managers
    # A model the dashboard creates (mlops models create): training may register to it.
    (dashboard,) = containers(doc("Deployment", "mlops-dashboard"))
    assert env_of(dashboard)["MLFLOW_MODEL_EDITORS"]["value"] == "mlops-train"


def test_the_owners_credentials_stay_with_migrate_and_mlflow() -> None:
    for item in workloads():
        for c in containers(item):
            for env in c.get("env", []):
                key = secret_key(env)
                if key == "POSTGRES_MLOPS_PASSWORD":
                    assert item.name == "mlops-migrate"
                if key == "POSTGRES_MLFLOW_PASSWORD":  # migrate: the backup's grants there
                    assert item.name in ("mlops-mlflow", "mlops-migrate"), f"{item}: {key}"
                if key in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY"):
                    assert item.name == "mlops-mlflow", f"{item}: {key}"
                if key and key.startswith("MINIO_MLFLOW_"):
                    assert item.name == "mlops-mlflow", f"{item}: {key}"
                if key and key.startswith("MINIO_ROOT"):
                    pytest.fail(f"{item}: the MinIO root account in an environment")
        items = secret_volume_items(item)
        if any(k.startswith("MINIO_ROOT") for k in items.values()):
            assert item.name in ("mlops-minio", "mlops-minio-buckets"), item


def test_secrets_are_files_where_the_images_read_files() -> None:
    """Postgres, MinIO, the bucket Job and the MLflow users Job get no secret in env."""
    for kind, name in (
        ("StatefulSet", "mlops-postgres"),
        ("Deployment", "mlops-minio"),
        ("Job", "mlops-minio-buckets"),
        ("Job", "mlops-mlflow-users"),
    ):
        item = doc(kind, name)
        for c in containers(item):
            assert not [e for e in c.get("env", []) if secret_key(e)], item
        assert secret_volume_items(item), item
        for volume in pod_template(item)["spec"]["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440, "readable by fsGroup only"
    (postgres,) = containers(doc("StatefulSet", "mlops-postgres"))
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/postgres/")
    (minio,) = containers(doc("Deployment", "mlops-minio"))
    env = {e["name"]: e.get("value") for e in minio["env"]}
    assert {"MINIO_ROOT_USER_FILE", "MINIO_ROOT_PASSWORD_FILE"} <= set(env)


def test_the_migrate_job_hands_every_role_its_password_file() -> None:
    (c,) = containers(doc("Job", "mlops-migrate"))
    folder = env_of(c)["DB_ROLE_PASSWORDS_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volume = {v["name"]: v for v in pod_template(doc("Job", "mlops-migrate"))["spec"]["volumes"]}[
        mounts[folder]
    ]
    paths = {item["path"] for item in volume["secret"]["items"]}
    assert paths == set(roles.ROLES)


def test_mlflow_users_job_and_server_share_the_auth_config() -> None:
    (server,) = containers(doc("Deployment", "mlops-mlflow"))
    (users,) = containers(doc("Job", "mlops-mlflow-users"))
    for c, item in (
        (server, doc("Deployment", "mlops-mlflow")),
        (users, doc("Job", "mlops-mlflow-users")),
    ):
        path = env_of(c)["MLFLOW_AUTH_CONFIG_PATH"]["value"]
        folder, _, name = path.rpartition("/")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_template(item)["spec"]["volumes"]}
        assert volumes[mounts[folder]]["configMap"]["name"] == "mlops-mlflow-auth"
        assert name in config_maps()["mlops-mlflow-auth"]
    assert "--app-name=basic-auth" in server["args"]
    ini = config_maps()["mlops-mlflow-auth"]["basic_auth.ini"]
    assert "default_permission = READ" in ini
    backend = next(a for a in server["args"] if a.startswith("--backend-store-uri="))
    assert f"database_uri = {backend.split('=', 1)[1]}" in ini, "auth tables beside MLflow's"


# The MinIO policies, statically.


def _policy(name: str) -> dict:
    return json.loads(config_maps()["mlops-minio-policies"][f"{name}.json"])


def _allowed(
    name: str, action: str, bucket: str, key: str | None = None, prefix: str | None = None
) -> bool:
    """The IAM subset the policies use: Allow statements, actions and resources with *, and
    a listing's ``s3:prefix`` condition (StringLike)."""
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    for statement in _policy(name)["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) - {"Condition"} == {"Effect", "Action", "Resource"}
        if "Condition" in statement:
            (patterns,) = (c["s3:prefix"] for c in statement["Condition"].values())
            assert list(statement["Condition"]) == ["StringLike"]
            if prefix is None or not any(fnmatch.fnmatchcase(prefix, p) for p in patterns):
                continue
        if any(fnmatch.fnmatchcase(action, a) for a in statement["Action"]) and any(
            fnmatch.fnmatchcase(resource, r) for r in statement["Resource"]
        ):
            return True
    return False


def test_every_minio_user_has_a_policy_and_every_policy_a_user() -> None:
    assert set(_minio_users()) == {
        n.removesuffix(".json") for n in config_maps()["mlops-minio-policies"]
    }
    for name in _minio_users():
        for statement in _policy(name)["Statement"]:
            for action in statement["Action"]:
                assert "*" not in action, f"{name}: a wildcard action"
            for resource in statement["Resource"]:
                bucket = resource.removeprefix("arn:aws:s3:::").split("/")[0]
                assert bucket in (BUCKET, MLFLOW_BUCKET), f"{name}: bucket {bucket}"
                assert (bucket == MLFLOW_BUCKET) == (name == "mlflow"), name


# The keys of contracts/keys.py, by what they hold.
VERSION = "2017-05-31-abc"
DATASET_KEYS = [
    keys.manifest_key(VERSION),
    *keys.dataset_part_keys(VERSION, 1),
    *keys.dataset_part_keys(VERSION, 2),
    keys.shard_manifest_key(DAY, 0, 2),
    keys.shard_part_key(DAY, 0, 2, "f" * 64),
]
QUARANTINE_KEYS = [
    *keys.quarantine_keys(DAY, VERSION, ["f" * 64]),
    keys.refused_rows_key(DAY, "f" * 64),
    keys.shard_quarantine_key(DAY, 0, 2, "f" * 64),
]
RAW_KEYS = [keys.raw_bars_key("AAPL"), keys.raw_responses_prefix("AAPL") + "2017-05-31.json"]
PREDICTION_KEYS = [keys.predictions_key(DAY, "stock-close", "1")]
REPORT_KEYS = [keys.monitoring_report_key(DAY, f"{n}.html") for n in keys.REPORT_NAMES]
REPORT_KEYS.append(keys.monitoring_report_key(DAY, "summary.json"))
WALKFORWARD_KEYS = [  # a walk-forward's outputs, and a point under its trainings' key
    *keys.walkforward_output_keys("20170531-every21-0123456789").values(),
    *keys.walkforward_point_keys("20170531-every21-9876543210", 0),
]
BACKUP_KEYS = [
    "backups/mlops/20170531T060000000000Z.dump",
    "backups/mlops/20170531T060000000000Z.json",
]
CATALOG_KEYS = [keys.stored_config_key("my-model")]  # `mlops models create`
CATALOG_PREFIX = f"{keys.MODEL_CATALOG_PREFIX}/"
# Who lists the stored catalog (every reader of the catalog) and who changes it.
CATALOG_READERS = {"train", "batch-infer", "dashboard"}
ALL_KEYS = (
    DATASET_KEYS
    + QUARANTINE_KEYS
    + RAW_KEYS
    + PREDICTION_KEYS
    + REPORT_KEYS
    + WALKFORWARD_KEYS
    + BACKUP_KEYS
    + CATALOG_KEYS
)

# Each stage's outputs (written, and read back to see whether they exist) and inputs.
WRITES = {
    "data-prep": DATASET_KEYS + QUARANTINE_KEYS + RAW_KEYS,
    "batch-infer": PREDICTION_KEYS,
    "monitor": REPORT_KEYS,
    "train": WALKFORWARD_KEYS,  # the walk-forward's points and outputs (its identity)
    "backup": BACKUP_KEYS,
    "dashboard": CATALOG_KEYS,  # mlops models create / delete
}
READS = {
    "train": DATASET_KEYS + CATALOG_KEYS,
    "batch-infer": DATASET_KEYS + CATALOG_KEYS,
    "trade": DATASET_KEYS,
    "monitor": DATASET_KEYS,
    "dashboard": REPORT_KEYS + WALKFORWARD_KEYS,  # its walk-forward section and routes
}


@pytest.mark.parametrize("name", sorted(_minio_users()))
def test_each_minio_user_may_exactly_what_its_stage_needs(name: str) -> None:
    if name == "console":  # people: read and list the pipeline's bucket, nothing more
        for key in ALL_KEYS:
            assert _allowed(name, "s3:GetObject", BUCKET, key), key
            for action in ("s3:PutObject", "s3:DeleteObject"):
                assert not _allowed(name, action, BUCKET, key), (action, key)
        assert _allowed(name, "s3:ListBucket", BUCKET, prefix="datasets/")
        for action in ("s3:PutBucketPolicy", "s3:PutBucketVersioning", "s3:DeleteBucket"):
            assert not _allowed(name, action, BUCKET), action
        assert not _allowed(name, "s3:GetObject", MLFLOW_BUCKET, "artifacts/x")
        return
    if name == "mlflow":
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert _allowed(name, action, MLFLOW_BUCKET, "artifacts/1/abc/artifacts/model/x")
        assert _allowed(name, "s3:ListBucket", MLFLOW_BUCKET)
        for key in ALL_KEYS:
            assert not _allowed(name, "s3:GetObject", BUCKET, key)
        return
    writes, reads = WRITES.get(name, []), READS.get(name, [])
    for key in writes:
        assert _allowed(name, "s3:PutObject", BUCKET, key), f"{name} must write {key}"
        assert _allowed(name, "s3:GetObject", BUCKET, key), f"{name} must see {key} exist"
    for key in reads:
        assert _allowed(name, "s3:GetObject", BUCKET, key), f"{name} must read {key}"
    for key in ALL_KEYS:
        if key not in writes:
            assert not _allowed(name, "s3:PutObject", BUCKET, key), f"{name} may not write {key}"
        if key not in writes and key not in reads:
            assert not _allowed(name, "s3:GetObject", BUCKET, key), f"{name} may not read {key}"
    for action in ("s3:DeleteObject", "s3:ListBucket", "s3:PutBucketPolicy"):
        assert not _allowed(name, action, BUCKET), name
        assert not _allowed(name, action, BUCKET, "datasets/x"), name
    # Only the backup lists and deletes under backups/ (its retention); the catalog's
    # readers list the stored catalog, and the dashboard deletes from it (`models delete`).
    for key in ALL_KEYS:
        deletes = _allowed(name, "s3:DeleteObject", BUCKET, key)
        allowed = (name == "backup" and key in BACKUP_KEYS) or (
            name == "dashboard" and key in CATALOG_KEYS
        )
        assert deletes == allowed, f"{name} deletes {key}"
    assert _allowed(name, "s3:ListBucket", BUCKET, prefix="backups/mlops/") == (name == "backup")
    lists = _allowed(name, "s3:ListBucket", BUCKET, prefix=CATALOG_PREFIX)
    assert lists == (name in CATALOG_READERS), f"{name} lists the stored catalog"
    assert not _allowed(name, "s3:ListBucket", BUCKET, prefix="datasets/")
    assert not _allowed(name, "s3:GetObject", MLFLOW_BUCKET, "artifacts/x"), name
