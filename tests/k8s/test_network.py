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
    "mlops-serve": {DNS, "mlflow"},
    "mlops-dashboard": {DNS, "postgres", "minio", "mlflow", API, INTERNET},
    "mlops-backup": {DNS, "postgres", "minio"},
}
PORTS = {"postgres": 5432, "minio": 9000, "mlflow": 5000}


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
                    assert block["cidr"] == "0.0.0.0/0"
                    if block.get("except"):
                        private = [ipaddress.ip_network(n) for n in block["except"]]
                        for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
                            assert ipaddress.ip_network(net) in private
                        assert ports == {("TCP", 443)}
                        found.add(INTERNET)
                    else:
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
        "mlops-data-prep", "mlops-train", "mlops-train-weekly", "mlops-batch-infer",
        "mlops-trade", "mlops-monitor", "mlops-daily", "mlops-dashboard",
    }  # fmt: skip
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
