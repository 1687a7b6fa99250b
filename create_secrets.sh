#!/usr/bin/env bash
# Create (or update) one Secret per identity from config-maps/secrets.env, each holding
# only the keys its workloads read: no pod, and no Job the orchestrator creates, can load
# another identity's credentials.
#
#   cp config-maps/secrets.env.example config-maps/secrets.env   # then replace changeme
#   ./create_secrets.sh                                           # or: ./create_secrets.sh FILE
#
# Each Secret is applied server-side (create or update, no copy of the values in an
# annotation); rerun it after editing secrets.env, then rerun the setup Jobs and restart
# the pods (docs/kubernetes.md, step 2). A key marked ? below is optional (left out when
# the file lacks it); any other missing key, or one still `changeme`, stops the script
# before anything is applied (exit 2). NAMESPACE (default mlops), KUBECTL (default kubectl).
set -euo pipefail

NAMESPACE="${NAMESPACE:-mlops}"
KUBECTL="${KUBECTL:-kubectl}"
ENV_FILE="${1:-config-maps/secrets.env}"

# Secret, then the keys it holds (tests/k8s/test_secrets.py keeps this table equal to the
# keys the manifests read from each Secret).
SECRETS="
mlops-secrets-postgres POSTGRES_PASSWORD POSTGRES_MLOPS_PASSWORD POSTGRES_MLFLOW_PASSWORD
mlops-secrets-migrate POSTGRES_MLOPS_PASSWORD POSTGRES_MLFLOW_PASSWORD POSTGRES_DATA_PREP_PASSWORD POSTGRES_TRAIN_PASSWORD POSTGRES_BATCH_INFER_PASSWORD POSTGRES_TRADE_PASSWORD POSTGRES_MONITOR_PASSWORD POSTGRES_ORCHESTRATOR_PASSWORD POSTGRES_DASHBOARD_PASSWORD POSTGRES_READER_PASSWORD POSTGRES_BACKUP_PASSWORD
mlops-secrets-minio MINIO_ROOT_USER MINIO_ROOT_PASSWORD
mlops-secrets-minio-buckets MINIO_ROOT_USER MINIO_ROOT_PASSWORD MINIO_MLFLOW_ACCESS_KEY MINIO_MLFLOW_SECRET_KEY MINIO_DATA_PREP_ACCESS_KEY MINIO_DATA_PREP_SECRET_KEY MINIO_TRAIN_ACCESS_KEY MINIO_TRAIN_SECRET_KEY MINIO_BATCH_INFER_ACCESS_KEY MINIO_BATCH_INFER_SECRET_KEY MINIO_TRADE_ACCESS_KEY MINIO_TRADE_SECRET_KEY MINIO_MONITOR_ACCESS_KEY MINIO_MONITOR_SECRET_KEY MINIO_DASHBOARD_ACCESS_KEY MINIO_DASHBOARD_SECRET_KEY MINIO_BACKUP_ACCESS_KEY MINIO_BACKUP_SECRET_KEY MINIO_CONSOLE_ACCESS_KEY MINIO_CONSOLE_SECRET_KEY
mlops-secrets-mlflow POSTGRES_MLFLOW_PASSWORD MINIO_MLFLOW_ACCESS_KEY MINIO_MLFLOW_SECRET_KEY MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SECRET_KEY
mlops-secrets-mlflow-users MLFLOW_ADMIN_PASSWORD MLFLOW_TRAIN_PASSWORD MLFLOW_BATCH_INFER_PASSWORD MLFLOW_MONITOR_PASSWORD MLFLOW_SERVE_PASSWORD MLFLOW_READER_PASSWORD MLFLOW_DASHBOARD_PASSWORD
mlops-secrets-data-prep POSTGRES_DATA_PREP_PASSWORD MINIO_DATA_PREP_ACCESS_KEY MINIO_DATA_PREP_SECRET_KEY ?ALPHAVANTAGE_API_KEY ?ALERT_WEBHOOK_URL
mlops-secrets-train POSTGRES_TRAIN_PASSWORD MINIO_TRAIN_ACCESS_KEY MINIO_TRAIN_SECRET_KEY MLFLOW_TRAIN_PASSWORD ?ALERT_WEBHOOK_URL
mlops-secrets-batch-infer POSTGRES_BATCH_INFER_PASSWORD MINIO_BATCH_INFER_ACCESS_KEY MINIO_BATCH_INFER_SECRET_KEY MLFLOW_BATCH_INFER_PASSWORD ?ALERT_WEBHOOK_URL
mlops-secrets-trade POSTGRES_TRADE_PASSWORD MINIO_TRADE_ACCESS_KEY MINIO_TRADE_SECRET_KEY ?ALPACA_API_KEY ?ALPACA_SECRET_KEY ?ALERT_WEBHOOK_URL
mlops-secrets-monitor POSTGRES_MONITOR_PASSWORD MINIO_MONITOR_ACCESS_KEY MINIO_MONITOR_SECRET_KEY MLFLOW_MONITOR_PASSWORD ?ALERT_WEBHOOK_URL
mlops-secrets-orchestrator POSTGRES_ORCHESTRATOR_PASSWORD ?ALERT_WEBHOOK_URL
mlops-secrets-serve MLFLOW_SERVE_PASSWORD ?SERVE_API_TOKEN ?SERVE_ADMIN_TOKEN
mlops-secrets-dashboard POSTGRES_DASHBOARD_PASSWORD MINIO_DASHBOARD_ACCESS_KEY MINIO_DASHBOARD_SECRET_KEY MLFLOW_DASHBOARD_PASSWORD ?DASHBOARD_USERS ?DASHBOARD_TOKEN
mlops-secrets-backup POSTGRES_BACKUP_PASSWORD MINIO_BACKUP_ACCESS_KEY MINIO_BACKUP_SECRET_KEY
"

die() {
    echo "create_secrets.sh: $*" >&2
    exit 2
}

(($# <= 1)) || die "usage: create_secrets.sh [ENV_FILE, default config-maps/secrets.env]"
[[ -r "$ENV_FILE" ]] || die "$ENV_FILE is not readable: copy config-maps/secrets.env.example to it and fill it in"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

# First every Secret's file, checked; nothing is applied unless all of them are good.
names=()
while read -r name keys; do
    [[ -n "$name" ]] || continue
    out="$work/$name.env"
    : >"$out"
    for key in $keys; do
        optional=false
        if [[ "$key" == \?* ]]; then
            optional=true
            key="${key#\?}"
        fi
        line="$(grep -E "^${key}=" "$ENV_FILE" | tail -n 1 || true)"
        if [[ -z "$line" ]]; then
            $optional && continue
            die "$ENV_FILE has no $key (the Secret $name needs it)"
        fi
        value="${line#*=}"
        [[ -n "$value" ]] || { $optional && continue; die "$key is empty in $ENV_FILE"; }
        [[ "$value" != changeme ]] || die "$key is still the placeholder changeme in $ENV_FILE"
        printf '%s\n' "$line" >>"$out"
    done
    names+=("$name")
done <<<"$SECRETS"

for name in "${names[@]}"; do
    "$KUBECTL" -n "$NAMESPACE" create secret generic "$name" \
        --from-env-file="$work/$name.env" --dry-run=client -o yaml \
        | "$KUBECTL" -n "$NAMESPACE" apply --server-side --force-conflicts -f -
done
echo "create_secrets.sh: ${#names[@]} Secrets applied in namespace $NAMESPACE"
