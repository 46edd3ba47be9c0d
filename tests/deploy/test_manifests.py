"""The checks an API server and a reviewer make, on both overlays; each check is then fed a
broken copy of the rendered objects to prove it can fail."""

from __future__ import annotations

from typing import Any

from tests.deploy import manifests
from tests.deploy.objects import find
from tests.deploy.tools import Manifest


def test_names_are_valid(objects: list[Manifest]) -> None:
    assert manifests.name_problems(objects) == []


def test_selectors_match_their_pod_templates(objects: list[Manifest]) -> None:
    assert manifests.selector_problems(objects) == []


def test_every_service_and_budget_selects_a_workload(objects: list[Manifest]) -> None:
    assert manifests.service_problems(objects) == []


def test_port_names_are_valid(objects: list[Manifest]) -> None:
    assert manifests.port_name_problems(objects) == []


def test_containers_have_probes_resources_and_a_hardened_context(
    objects: list[Manifest],
) -> None:
    assert manifests.container_problems(objects) == []


def test_images_are_skaffold_artifacts_or_pinned(objects: list[Manifest], image: str) -> None:
    assert manifests.image_problems(objects, {image}) == []


def test_references_resolve_and_no_secret_is_committed(objects: list[Manifest]) -> None:
    assert manifests.reference_problems(objects) == []


# --- each check fails on a broken input ---------------------------------------------------


def get(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """A rendered object that must exist."""
    found = find(objects, kind, name)
    assert found is not None, f"{kind}/{name} not rendered"
    return found


def container(objects: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    """The main container of a workload."""
    first: dict[str, Any] = get(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]
    return first


def test_a_bad_dns_name_is_caught(objects: list[Manifest]) -> None:
    get(objects, "Deployment", "profile")["metadata"]["name"] = "Profile_Service"
    get(objects, "Service", "identity")["metadata"]["name"] = "1dentity"
    get(objects, "StatefulSet", "kafka")["metadata"]["name"] = "kafka.cluster"
    container(objects, "Deployment", "wallet")["name"] = "wallet" * 11
    problems = manifests.name_problems(objects)
    assert "Deployment/Profile_Service: name 'Profile_Service' is not a DNS-1123 subdomain" in (
        problems
    )
    assert "Service/1dentity: name '1dentity' is not a DNS-1035 label" in problems
    assert "StatefulSet/kafka.cluster: name 'kafka.cluster' is not a DNS-1123 label" in problems
    assert any("container name 'walletwallet" in p for p in problems)
    assert len(problems) == 4


def test_a_selector_mismatch_is_caught(objects: list[Manifest]) -> None:
    get(objects, "Deployment", "identity")["spec"]["selector"]["matchLabels"] = {
        "app.kubernetes.io/name": "identity-v2"
    }
    problems = manifests.selector_problems(objects)
    assert len(problems) == 1
    assert problems[0].startswith("Deployment/identity: selector {'app.kubernetes.io/name'")


def test_a_service_selecting_nothing_is_caught(objects: list[Manifest]) -> None:
    get(objects, "Service", "profile")["spec"]["selector"] = {"app.kubernetes.io/name": "profiles"}
    get(objects, "PodDisruptionBudget", "mongo")["spec"]["selector"]["matchLabels"] = {"x": "y"}
    assert sorted(manifests.service_problems(objects)) == [
        "PodDisruptionBudget/mongo: selector {'x': 'y'} selects no workload",
        "Service/profile: selector {'app.kubernetes.io/name': 'profiles'} selects no workload",
    ]


def test_a_service_port_the_pods_do_not_declare_is_caught(objects: list[Manifest]) -> None:
    get(objects, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "https"
    assert manifests.service_problems(objects) == [
        "Service/gateway: targetPort 'https' is no port of the pods"
    ]


def test_a_port_name_over_15_characters_is_caught(objects: list[Manifest]) -> None:
    container(objects, "Deployment", "wallet")["ports"][2]["name"] = "passkit-web-service"
    get(objects, "Service", "kafka")["spec"]["ports"][0]["name"] = "Client"
    assert sorted(manifests.port_name_problems(objects)) == [
        "Deployment/wallet: port name 'passkit-web-service' is not an IANA service name",
        "Service/kafka: port name 'Client' is not an IANA service name",
    ]


def test_a_missing_probe_is_caught(objects: list[Manifest]) -> None:
    del container(objects, "Deployment", "profile")["livenessProbe"]
    del container(objects, "StatefulSet", "mongo")["readinessProbe"]
    assert sorted(manifests.container_problems(objects)) == [
        "Deployment/profile container 'profile': no livenessProbe",
        "StatefulSet/mongo container 'mongo': no readinessProbe",
    ]


def test_a_probe_on_an_undeclared_port_is_caught(objects: list[Manifest]) -> None:
    container(objects, "Deployment", "identity")["readinessProbe"]["grpc"]["port"] = 50052
    assert manifests.container_problems(objects) == [
        "Deployment/identity container 'identity': readinessProbe grpc port 50052 is not a "
        "declared port"
    ]


def test_missing_requests_and_limits_are_caught(objects: list[Manifest]) -> None:
    resources = container(objects, "Job", "kafka-create-topics")["resources"]
    del resources["limits"]["memory"]
    del resources["requests"]
    assert manifests.container_problems(objects) == [
        f"Job/kafka-create-topics container 'create-topics': no {what}"
        for what in ("requests.cpu", "requests.memory", "limits.memory")
    ]


def test_missing_security_context_bits_are_caught(objects: list[Manifest]) -> None:
    gateway = get(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    del gateway["securityContext"]["runAsNonRoot"]
    del gateway["securityContext"]["seccompProfile"]
    context = gateway["containers"][0]["securityContext"]
    for key in ("runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation"):
        del context[key]
    context["capabilities"] = {"drop": ["NET_RAW"], "add": ["NET_ADMIN"]}
    context["runAsUser"] = 0
    where = "Deployment/gateway container 'gateway'"
    assert manifests.container_problems(objects) == [
        f"{where}: {problem}"
        for problem in (
            "runAsNonRoot is not true",
            "runAsUser is 0 (root)",
            "allowPrivilegeEscalation is not false",
            "readOnlyRootFilesystem is not true",
            "capabilities do not drop ALL",
            "capabilities are added",
            "seccompProfile is not RuntimeDefault",
        )
    ]


def test_unpinned_images_are_caught(objects: list[Manifest], image: str) -> None:
    container(objects, "StatefulSet", "kafka")["image"] = "apache/kafka:latest"
    container(objects, "StatefulSet", "mongo")["image"] = "mongo:8.0"
    container(objects, "Job", "mongo-init-replica-set")["image"] = "registry:5000/mongo"
    container(objects, "Deployment", "identity")["image"] = "lodestar-identity"
    unpinned = "is neither a skaffold artifact nor pinned (no tag or latest)"
    assert sorted(manifests.image_problems(objects, {image})) == [
        f"Deployment/identity container 'identity': image 'lodestar-identity' {unpinned}",
        "Job/mongo-init-replica-set container 'init-replica-set': image 'registry:5000/mongo' "
        f"{unpinned}",
        f"StatefulSet/kafka container 'kafka': image 'apache/kafka:latest' {unpinned}",
        "StatefulSet/mongo container 'mongo': image 'mongo:8.0' has a floating tag '8.0' "
        "(pin x.y.z or a digest)",
    ]


def test_a_digest_pins_an_image() -> None:
    assert manifests.image_problem("mongo@sha256:" + "ab" * 32, ()) is None
    assert manifests.image_problem("mongo:8.0.17", ()) is None
    assert manifests.image_problem("mongo@sha256:abc", ()) == (
        "image 'mongo@sha256:abc' has a malformed digest"
    )


def test_dangling_references_and_committed_secrets_are_caught(objects: list[Manifest]) -> None:
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lodestar-pii"}})
    env = container(objects, "Job", "kafka-create-topics")["env"]
    env[0]["valueFrom"]["configMapKeyRef"]["key"] = "LODESTAR_KAFKA_PARTITIONS"
    common = env[0]["valueFrom"]["configMapKeyRef"]["name"]
    get(objects, "Deployment", "wallet")["spec"]["template"]["spec"]["serviceAccountName"] = "w"
    get(objects, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]["name"] = "api"
    path = get(objects, "Ingress", "wallet-passkit")["spec"]["rules"][0]["http"]["paths"][0]
    path["backend"]["service"]["port"] = {"name": "http"}
    get(objects, "StatefulSet", "mongo")["spec"]["serviceName"] = "mongo"
    assert sorted(manifests.reference_problems(objects)) == [
        "Deployment/wallet: ServiceAccount 'w' does not exist",
        "HorizontalPodAutoscaler/gateway: scale target Deployment/api does not exist",
        "Ingress/wallet-passkit: backend Service 'wallet' has no port {'name': 'http'}",
        f"Job/kafka-create-topics: ConfigMap {common!r} has no key 'LODESTAR_KAFKA_PARTITIONS'",
        "Secret/lodestar-pii: Secrets are never committed",
        "StatefulSet/mongo: serviceName 'mongo' is not a headless Service",
    ]
