"""The NetworkPolicies: only the ingress reaches the gateway and PassKit, only the gateway
(and the wallet, for identity and profile) reaches the services' gRPC ports; each check is
then fed a broken copy to prove it can fail."""

from __future__ import annotations

from tests.deploy.network import Peer, Policies, network_policy_problems
from tests.deploy.objects import containers, effective_env, find, mapping, ref, workloads
from tests.deploy.tools import Manifest


def test_policies_allow_exactly_the_platforms_connections(objects: list[Manifest]) -> None:
    assert network_policy_problems(objects) == []


def test_every_pod_is_isolated(objects: list[Manifest]) -> None:
    policies = Policies(objects)
    stranger = Peer("stranger", "default", {"app": "x"})
    for name in policies.workloads:
        for port in ("grpc", "http", "metrics", "passkit", "mongo", "client"):
            try:
                allowed = policies.allows(stranger, name, port)
            except LookupError:
                continue
            assert not allowed, f"a pod of another namespace reaches {name}:{port}"


def without(objects: list[Manifest], name: str) -> list[Manifest]:
    """The objects with one NetworkPolicy removed."""
    policy = find(objects, "NetworkPolicy", name)
    assert policy is not None, f"NetworkPolicy/{name} not rendered"
    return [o for o in objects if o is not policy]


def test_without_the_default_deny_the_check_fails(objects: list[Manifest]) -> None:
    problems = network_policy_problems(without(objects, "default-deny-ingress"))
    assert "no default-deny ingress NetworkPolicy (podSelector: {}, no rules)" in problems


def test_a_service_open_to_every_pod_is_caught(objects: list[Manifest]) -> None:
    policy = find(objects, "NetworkPolicy", "identity-grpc")
    assert policy is not None
    mapping(policy["spec"])["ingress"] = [{"ports": [{"port": "grpc"}]}]
    problems = network_policy_problems(objects)
    assert "profile can reach identity:grpc" in problems
    assert "a pod in another namespace can reach identity:grpc" in problems


def test_a_missing_door_is_caught(objects: list[Manifest]) -> None:
    problems = network_policy_problems(without(objects, "gateway-from-ingress"))
    assert "ingress controller cannot reach gateway:http" in problems


def test_a_policy_selecting_no_pod_is_caught(objects: list[Manifest]) -> None:
    policy = find(objects, "NetworkPolicy", "profile-grpc")
    assert policy is not None
    policy["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": "profiles"}}
    problems = network_policy_problems(objects)
    assert "NetworkPolicy/profile-grpc selects no workload's pods" in problems
    assert "gateway cannot reach profile:grpc" in problems


def token_problems(objects: list[Manifest]) -> list[str]:
    """Lodestar processes that would open gRPC or metrics doors without their tokens."""
    problems = []
    for workload in workloads(objects):
        for container in containers(workload, init=False):
            module = str((container.get("args") or [""])[0])
            if module.startswith(("services.", "gateway")):
                env = effective_env(objects, container)
                for token in ("LODESTAR_GRPC_TOKEN", "LODESTAR_METRICS_TOKEN"):
                    if token not in env:
                        problems.append(f"{ref(workload)} has no {token}")
    return problems


def test_every_process_has_the_grpc_and_metrics_tokens(objects: list[Manifest]) -> None:
    assert token_problems(objects) == []


def test_a_process_without_the_token_is_caught(objects: list[Manifest]) -> None:
    profile = find(objects, "Deployment", "profile")
    assert profile is not None
    container = profile["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [v for v in container["env"] if v["name"] != "LODESTAR_GRPC_TOKEN"]
    assert token_problems(objects) == ["Deployment/profile has no LODESTAR_GRPC_TOKEN"]
