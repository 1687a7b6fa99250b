#!/usr/bin/env bash
# Wait for a Job to finish and say how: exit 0 when it completed, 1 when it failed (at
# once, with the end of its log) or is still running at the timeout.
#
#   ./wait_job.sh mlops-migrate            # default timeout 600 s
#   ./wait_job.sh mlops-train 2h           # s, m or h, or together: 1h30m
#
# (`kubectl wait --for=condition=complete` sits out its whole timeout when a Job fails.)
# NAMESPACE (default mlops), KUBECTL (default kubectl), WAIT_POLL_SECONDS (default 5).
set -euo pipefail

NAMESPACE="${NAMESPACE:-mlops}"
KUBECTL="${KUBECTL:-kubectl}"
POLL="${WAIT_POLL_SECONDS:-5}"

die() {
    echo "wait_job.sh: $*" >&2
    exit 2
}

(($# >= 1 && $# <= 2)) || die "usage: wait_job.sh JOB [TIMEOUT, e.g. 600, 30m, 2h, 1h30m]"
job="$1"
timeout="${2:-600}"
# Seconds (600), or hours, minutes and seconds in that order, each at most once (2h,
# 1h30m, 90m, 45s). Digits are read as base 10 (08 is eight, not an octal error).
[[ "$timeout" =~ ^([0-9]+)$|^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?$ && -n "$timeout" ]] ||
    die "invalid timeout '$timeout' (e.g. 600, 45s, 30m, 2h, 1h30m)"
if [[ -n "${BASH_REMATCH[1]}" ]]; then
    seconds=$((10#${BASH_REMATCH[1]}))
else
    seconds=$((10#${BASH_REMATCH[3]:-0} * 3600 + 10#${BASH_REMATCH[5]:-0} * 60 + 10#${BASH_REMATCH[7]:-0}))
fi

start=$SECONDS
while :; do
    # The Job's conditions that are True, e.g. "SuccessCriteriaMet Complete".
    state="$("$KUBECTL" -n "$NAMESPACE" get job "$job" \
        -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')" \
        || die "cannot read job/$job in namespace $NAMESPACE"
    case " $state " in
        *" Complete "*)
            echo "job/$job completed"
            exit 0
            ;;
        *" Failed "*)
            reason="$("$KUBECTL" -n "$NAMESPACE" get job "$job" \
                -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')"
            echo "job/$job failed (${reason:-no reason given}); the end of its log:" >&2
            "$KUBECTL" -n "$NAMESPACE" logs "job/$job" --tail=5 >&2 || true
            exit 1
            ;;
    esac
    if ((SECONDS - start >= seconds)); then
        echo "job/$job is still running after $timeout" >&2
        exit 1
    fi
    sleep "$POLL"
done
