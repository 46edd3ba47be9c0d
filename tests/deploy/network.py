"""Who may connect to whom, as the rendered NetworkPolicies say.

A small evaluator of the Kubernetes NetworkPolicy ingress rules (pod and namespace selectors
with ``matchLabels`` and ``matchExpressions``, named and numbered ports), and the matrix of
connections the platform must allow and refuse. Problems are strings; an empty list passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.deploy.objects import container_ports, items, mapping, pod_labels, ref, workloads
from tests.deploy.tools import Manifest

NAMESPACE = "lodestar"
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"
SERVICES = ("identity", "profile", "segmentation", "recommendation", "wallet")
# gRPC callers of each service: the gateway calls all, the wallet calls identity and profile.
GRPC_CALLERS = {
    "identity": {"gateway", "wallet"},
    "profile": {"gateway", "wallet"},
    "segmentation": {"gateway"},
    "recommendation": {"gateway"},
    "wallet": {"gateway"},
}


@dataclass(frozen=True)
class Peer:
    """Where a connection comes from: a pod's namespace labels and its own labels."""

    name: str
    namespace: str = NAMESPACE
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        """The label every namespace carries since Kubernetes 1.22."""
        return {"kubernetes.io/metadata.name": self.namespace}


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector: ``{}`` selects everything; every term must hold."""
    for key, value in mapping(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expression in items(selector.get("matchExpressions")):
        term = mapping(expression)
        key, operator = str(term.get("key")), term.get("operator")
        values = {str(v) for v in items(term.get("values"))}
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_allowed(peer_rule: Mapping[str, Any], source: Peer) -> bool:
    if "ipBlock" in peer_rule:
        return False  # the platform's rules never open a door by address
    pods = peer_rule.get("podSelector")
    namespaces = peer_rule.get("namespaceSelector")
    if namespaces is None:
        in_namespace = source.namespace == NAMESPACE
    else:
        in_namespace = matches(mapping(namespaces), source.namespace_labels)
    return in_namespace and (pods is None or matches(mapping(pods), source.labels))


def _port_allowed(rule_ports: list[Any], port_name: str, port_number: int) -> bool:
    if not rule_ports:
        return True
    return any(mapping(p).get("port") in (port_name, port_number, None) for p in rule_ports)


class Policies:
    """The rendered NetworkPolicies and workloads of one overlay."""

    def __init__(self, objects: list[Manifest]) -> None:
        self.policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
        self.workloads = {
            str(pod_labels(w).get("app.kubernetes.io/name")): w for w in workloads(objects)
        }

    def pod(self, name: str) -> Peer:
        """A peer standing for the pods of workload ``name``."""
        return Peer(name, NAMESPACE, pod_labels(self.workloads[name]))

    def port_number(self, workload: str, port_name: str) -> int:
        """The container port a workload declares under ``port_name``."""
        for port in container_ports(self.workloads[workload]):
            if port.get("name") == port_name:
                return int(port["containerPort"])
        raise LookupError(f"{workload} declares no port named {port_name}")

    def allows(self, source: Peer, workload: str, port_name: str) -> bool:
        """Whether ``source`` may connect to ``workload``'s port ``port_name``."""
        labels = pod_labels(self.workloads[workload])
        number = self.port_number(workload, port_name)
        selecting = [
            p
            for p in self.policies
            if matches(mapping(mapping(p.get("spec")).get("podSelector")), labels)
            and "Ingress" in items(mapping(p.get("spec")).get("policyTypes"))
        ]
        if not selecting:
            return True  # a pod no policy isolates accepts everything
        for policy in selecting:
            for rule in items(mapping(policy.get("spec")).get("ingress")):
                body = mapping(rule)
                peers = items(body.get("from"))
                if not _port_allowed(items(body.get("ports")), port_name, number):
                    continue
                if not peers or any(_peer_allowed(mapping(p), source) for p in peers):
                    return True
        return False


def expected_connections(policies: Policies) -> list[tuple[Peer, str, str, bool]]:
    """``(source, workload, port, allowed)`` for every door the platform has."""
    ingress = Peer("ingress controller", INGRESS_NAMESPACE, {"app": "ingress-nginx"})
    monitoring = Peer("prometheus", MONITORING_NAMESPACE, {"app": "prometheus"})
    stranger = Peer("a pod in another namespace", "default", {"app": "anything"})
    pods = {name: policies.pod(name) for name in (*SERVICES, "gateway")}
    checks: list[tuple[Peer, str, str, bool]] = [
        (ingress, "gateway", "http", True),
        (ingress, "wallet", "passkit", True),
        (stranger, "gateway", "http", False),
        (stranger, "wallet", "passkit", False),
        (pods["profile"], "gateway", "http", False),
    ]
    for service in SERVICES:
        for caller, peer in pods.items():
            if caller != service:
                allowed = caller in GRPC_CALLERS[service]
                checks.append((peer, service, "grpc", allowed))
        checks += [
            (ingress, service, "grpc", False),
            (stranger, service, "grpc", False),
            (monitoring, service, "metrics", True),
            (stranger, service, "metrics", False),
            (pods[service], "mongo", "mongo", True),
            (pods[service], "kafka", "client", True),
        ]
    checks += [
        (pods["gateway"], "kafka", "client", True),
        (pods["gateway"], "mongo", "mongo", True),
        (stranger, "mongo", "mongo", False),
        (stranger, "kafka", "client", False),
        (ingress, "kafka", "client", False),
    ]
    return checks


def network_policy_problems(objects: list[Manifest]) -> list[str]:
    """Every expected connection is allowed and every other one refused; every policy
    selects at least one workload's pods."""
    policies = Policies(objects)
    problems = []
    if not any(
        mapping(mapping(p.get("spec")).get("podSelector")) == {}
        and not items(mapping(p.get("spec")).get("ingress"))
        for p in policies.policies
    ):
        problems.append("no default-deny ingress NetworkPolicy (podSelector: {}, no rules)")
    for policy in policies.policies:
        selector = mapping(mapping(policy.get("spec")).get("podSelector"))
        if selector and not any(
            matches(selector, pod_labels(w)) for w in policies.workloads.values()
        ):
            problems.append(f"{ref(policy)} selects no workload's pods")
    for source, workload, port, allowed in expected_connections(policies):
        if policies.allows(source, workload, port) != allowed:
            verb = "cannot" if allowed else "can"
            problems.append(f"{source.name} {verb} reach {workload}:{port}")
    return problems
