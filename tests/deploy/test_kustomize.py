"""``kubectl kustomize`` renders both overlays, and every object validates strictly against
the Kubernetes 1.32 schemas."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.deploy import tools
from tests.deploy.manifests import schema_problems
from tests.deploy.objects import find
from tests.deploy.tools import Manifest, Tool


def test_kubectl_is_found_and_reports_its_version(kubectl_tool: Tool) -> None:
    assert kubectl_tool.path.is_file()
    assert kubectl_tool.version.startswith("v1.")
    assert "kustomize v5" in kubectl_tool.version


def test_each_overlay_renders_the_whole_platform(objects: list[Manifest], overlay: str) -> None:
    kinds = Counter(str(o["kind"]) for o in objects)
    assert kinds["Deployment"] == 6  # five services and the gateway
    assert kinds["StatefulSet"] == 2  # Kafka and MongoDB
    assert kinds["Job"] == 2  # topic creation, rs.initiate
    assert kinds["Ingress"] == 2  # gateway, PassKit web service
    assert kinds["HorizontalPodAutoscaler"] == 6  # gateway and the five consumer services
    assert kinds["PodDisruptionBudget"] == 8
    assert {o["metadata"].get("namespace") for o in objects} == {"lodestar"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lodestar" for o in objects)


def test_prod_scales_out_kafka_and_mongo(rendered: dict[str, list[Manifest]]) -> None:
    for overlay, nodes in (("dev", 1), ("prod", 3)):
        for name in ("kafka", "mongo"):
            statefulset = find(rendered[overlay], "StatefulSet", name)
            assert statefulset is not None
            assert statefulset["spec"]["replicas"] == nodes, (overlay, name)


def test_render_fails_on_a_broken_kustomization(kubectl_tool: Tool, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(tools.RenderError, match=r"missing\.yaml"):
        tools.render(kubectl_tool, tmp_path)


def test_every_object_validates_strictly_against_kubernetes_1_32(
    objects: list[Manifest],
) -> None:
    assert schema_problems(objects) == []


def deployment(objects: list[Manifest], name: str) -> Manifest:
    """A rendered Deployment that must exist."""
    found = find(objects, "Deployment", name)
    assert found is not None
    return found


def test_schema_check_catches_an_unknown_field(objects: list[Manifest]) -> None:
    deployment(objects, "identity")["spec"]["template"]["spec"]["containers"][0]["probe"] = {}
    assert any("Deployment/identity" in p and "probe" in p for p in schema_problems(objects))


def test_schema_check_catches_a_wrong_type(objects: list[Manifest]) -> None:
    deployment(objects, "gateway")["spec"]["revisionHistoryLimit"] = "five"
    assert any("revisionHistoryLimit" in p for p in schema_problems(objects))


def test_schema_check_catches_a_missing_required_field(objects: list[Manifest]) -> None:
    del deployment(objects, "profile")["spec"]["selector"]
    assert any("Deployment/profile" in p and "selector" in p for p in schema_problems(objects))


def test_schema_check_refuses_an_api_version_gone_by_1_32(objects: list[Manifest]) -> None:
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa is not None
    hpa["apiVersion"] = "autoscaling/v2beta2"  # removed in 1.26
    assert any("autoscaling/v2beta2" in p for p in schema_problems(objects))


def test_schema_check_refuses_unknown_kinds_unless_allow_listed() -> None:
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "gateway"},
        "spec": {"secretName": "lodestar-gateway-tls"},
    }
    assert schema_problems([certificate]) == [
        "Certificate/gateway: no Kubernetes 1.32 schema for cert-manager.io/v1 Certificate "
        "(not allow-listed)"
    ]
    assert schema_problems([certificate], allowed_kinds={"Certificate"}) == []
