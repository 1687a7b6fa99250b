#!/usr/bin/env bash
# Port-forward the mlops web UIs and APIs to this machine and print their local URLs:
#   MinIO console      http://localhost:9001   (log in with MINIO_ROOT_USER/PASSWORD)
#   MLflow UI          http://localhost:5000
#   Dashboard          http://localhost:8050
#   Serving API        http://localhost:8080   (/healthz, /readyz)
# Ctrl-C (or any forward dying) stops every forward. Local ports can be changed with
# MINIO_CONSOLE_PORT, MLFLOW_PORT, DASHBOARD_PORT and SERVE_PORT; the namespace with
# NAMESPACE (default mlops); the kubectl binary with KUBECTL.
set -euo pipefail

NAMESPACE="${NAMESPACE:-mlops}"
KUBECTL="${KUBECTL:-kubectl}"
ADDRESS="${ADDRESS:-127.0.0.1}"

# name|service|local port|service port|path shown
FORWARDS=(
    "MinIO console|mlops-minio|${MINIO_CONSOLE_PORT:-9001}|9001|/"
    "MLflow UI|mlops-mlflow|${MLFLOW_PORT:-5000}|5000|/"
    "Dashboard|mlops-dashboard|${DASHBOARD_PORT:-8050}|8050|/"
    "Serving API|mlops-serve|${SERVE_PORT:-8080}|8080|/healthz"
)

command -v "$KUBECTL" >/dev/null 2>&1 || {
    echo "forward_ports.sh: $KUBECTL not found" >&2
    exit 1
}

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mlops-forwards.XXXXXX")"
PIDS=()

cleanup() {
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        echo
        echo "Stopping ${#PIDS[@]} port-forward(s)."
        kill "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
    rm -rf "$LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for entry in "${FORWARDS[@]}"; do
    IFS='|' read -r label service local_port remote_port _ <<<"$entry"
    "$KUBECTL" -n "$NAMESPACE" port-forward --address "$ADDRESS" "svc/$service" \
        "$local_port:$remote_port" >"$LOG_DIR/$service.log" 2>&1 &
    PIDS+=("$!")
done

sleep "${FORWARD_SETTLE_SECONDS:-2}"
failed=0
for i in "${!FORWARDS[@]}"; do
    IFS='|' read -r label service _ _ _ <<<"${FORWARDS[$i]}"
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
        echo "Port-forward for $label (svc/$service) failed:" >&2
        sed 's/^/    /' "$LOG_DIR/$service.log" >&2
        failed=1
    fi
done
if ((failed)); then
    exit 1
fi

echo "Port-forwards in namespace $NAMESPACE (Ctrl-C stops them all):"
for entry in "${FORWARDS[@]}"; do
    IFS='|' read -r label service local_port _ path <<<"$entry"
    printf '  %-14s http://localhost:%s%s\n' "$label" "$local_port" "$path"
done

# Wait until any forward ends (a pod restarted, the cluster went away) or Ctrl-C.
# (A polling loop rather than `wait -n`, which older bash versions lack.)
while :; do
    for i in "${!FORWARDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            IFS='|' read -r label service _ _ _ <<<"${FORWARDS[$i]}"
            echo "The port-forward for $label (svc/$service) stopped; stopping the others:" >&2
            sed 's/^/    /' "$LOG_DIR/$service.log" >&2
            exit 1
        fi
    done
    sleep 1
done
