"""NetworkPolicies: every pod may reach exactly the destinations its work needs.

A small evaluator of the NetworkPolicy features the manifests use (podSelector,
namespaceSelector with podSelector, ipBlock with except, ports) computes, for each pod
template, the set of destinations its egress allows, and the set of pods each server
accepts; both are compared with the design below.
"""

from __future__ import annotations

import ipaddress

import pytest

from .manifests import Doc, docs, pod_template, workloads

DNS = "dns"
API = "kube-api"
INTERNET = "internet-https"

# Workload -> what it may connect to (in-cluster apps by app.kubernetes.io/name).
EGRESS = {
    "mlops-postgres": {DNS},
    "mlops-minio": {DNS},
    "mlops-minio-buckets": {DNS, "minio"},
    "mlops-mlflow": {DNS, "postgres", "minio"},
    "mlops-mlflow-users": {DNS, "mlflow"},
    "mlops-migrate": {DNS, "postgres"},
    "mlops-data-prep": {DNS, "postgres", "minio", INTERNET},
    "mlops-train": {DNS, "postgres", "minio", "mlflow", INTERNET},
    "mlops-train-weekly": {DNS, "postgres", "minio", "mlflow", INTERNET},
    "mlops-walk-forward-plan": {DNS, "postgres", "minio", "mlflow"},
    "mlops-walk-forward": {DNS, "postgres", "minio", "mlflow"},
    "mlops-walk-forward-finalize": {DNS, "postgres", "minio", "mlflow"},
    "mlops-batch-infer": {DNS, "postgres", "minio", "mlflow", INTERNET},
    "mlops-trade": {DNS, "postgres", "minio", INTERNET},
    "mlops-monitor": {DNS, "postgres", "minio", "mlflow", INTERNET},
    "mlops-daily": {DNS, "postgres", API, INTERNET},
    "mlops-requests": {DNS, "postgres", API},
    "mlops-serve": {DNS, "mlflow"},
    # No Kubernetes API (its requests for work are rows the controller acts on) and no
    # internet: its own alerts are recorded, not delivered (docs/failures.md).
    "mlops-dashboard": {DNS, "postgres", "minio", "mlflow"},
    "mlops-backup": {DNS, "postgres", "minio"},
}
PORTS = {"postgres": 5432, "minio": 9000, "mlflow": 5000}
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def _ids(items: list[Doc]) -> list[str]:
    return [d.rel for d in items]


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policies(kind: str, labels: dict) -> list[dict]:
    return [
        p.body["spec"]
        for p in docs("NetworkPolicy")
        if kind in p.body["spec"]["policyTypes"] and _selects(p.body["spec"]["podSelector"], labels)
    ]


def _app_of(peer: dict) -> str:
    name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
    assert any(
        pod_template(w)["metadata"]["labels"]["app.kubernetes.io/name"] == name for w in workloads()
    )
    return name


def _destinations(labels: dict) -> set[str]:
    found: set[str] = set()
    for spec in _policies("Egress", labels):
        for rule in spec.get("egress", []):
            ports = {(p["protocol"], p["port"]) for p in rule.get("ports", [])}
            assert ports, "every egress rule names its ports"
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    if block["cidr"] == "0.0.0.0/0":
                        private = [ipaddress.ip_network(n) for n in block["except"]]
                        for net in PRIVATE:
                            assert net in private
                        assert ports == {("TCP", 443)}
                        found.add(INTERNET)
                    else:  # the API server: private addresses only, its ports only
                        assert ipaddress.ip_network(block["cidr"]) in PRIVATE, block
                        assert ports == {("TCP", 443), ("TCP", 6443), ("TCP", 8443)}
                        found.add(API)
                elif "namespaceSelector" in peer:
                    assert peer["namespaceSelector"]["matchLabels"] == {
                        "kubernetes.io/metadata.name": "kube-system"
                    }
                    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                    assert ports == {("UDP", 53), ("TCP", 53)}
                    found.add(DNS)
                else:
                    app = _app_of(peer)
                    assert ports == {("TCP", PORTS[app])}, app
                    found.add(app)
    return found


def test_egress_is_denied_by_default_for_every_pod() -> None:
    deny = [p for p in docs("NetworkPolicy") if p.name == "mlops-default-deny-egress"]
    (policy,) = deny
    assert policy.body["spec"] == {"podSelector": {}, "policyTypes": ["Egress"]}


@pytest.mark.parametrize("item", workloads(), ids=_ids(workloads()))
def test_each_pod_reaches_exactly_what_it_needs(item: Doc) -> None:
    labels = pod_template(item)["metadata"]["labels"]
    assert _policies("Egress", labels), f"{item}: no egress policy selects it"
    assert _destinations(labels) == EGRESS[item.name], item


def test_the_api_server_is_for_the_orchestrator_only_and_never_the_internet() -> None:
    reach = {
        w.name for w in workloads() if API in _destinations(pod_template(w)["metadata"]["labels"])
    }
    assert reach == {"mlops-daily", "mlops-requests"}
    (policy,) = [p for p in docs("NetworkPolicy") if p.name == "mlops-kube-api-egress"]
    (rule,) = policy.body["spec"]["egress"]
    blocks = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for peer in rule["to"]]
    assert blocks == PRIVATE, "no public address: the API endpoint only"


def test_the_external_apis_are_for_data_prep_and_trade_only() -> None:
    """The internet: the external APIs for data prep and trade; the alert webhook for the
    pods that send alerts (each reads ALERT_WEBHOOK_URL), and for no one else."""

    def reach(label: str) -> set[str]:
        return {
            w.name
            for w in workloads()
            if pod_template(w)["metadata"]["labels"].get(label) == "true"
            and INTERNET in _destinations({label: "true"})
        }

    assert reach("mlops/external-api-client") == {"mlops-data-prep", "mlops-trade"}
    alerting = {
        w.name
        for w in workloads()
        if any(
            e["name"] == "ALERT_WEBHOOK_URL"
            for c in pod_template(w)["spec"]["containers"]
            for e in c.get("env", [])
        )
    }
    assert reach("mlops/alert-client") == alerting
    assert alerting == {
        "mlops-data-prep",
        "mlops-train",
        "mlops-train-weekly",
        "mlops-batch-infer",
        "mlops-trade",
        "mlops-monitor",
        "mlops-daily",
    }  # fmt: skip (not the dashboard: it has no egress beyond its backends)
    anywhere = {
        w.name
        for w in workloads()
        if INTERNET in _destinations(pod_template(w)["metadata"]["labels"])
    }
    assert anywhere == alerting | reach("mlops/external-api-client")


@pytest.mark.parametrize("app", sorted(PORTS))
def test_each_server_accepts_exactly_the_pods_that_may_reach_it(app: str) -> None:
    server = next(
        w
        for w in workloads()
        if pod_template(w)["metadata"]["labels"]["app.kubernetes.io/name"] == app
    )
    accepted = set()
    for spec in _policies("Ingress", pod_template(server)["metadata"]["labels"]):
        for rule in spec.get("ingress", []):
            assert rule["ports"] == [{"protocol": "TCP", "port": PORTS[app]}]
            for peer in rule["from"]:
                accepted |= {
                    w.name
                    for w in workloads()
                    if _selects(peer["podSelector"], pod_template(w)["metadata"]["labels"])
                }
    assert accepted == {name for name, dest in EGRESS.items() if app in dest}
