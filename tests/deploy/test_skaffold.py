"""skaffold.yaml validates against the skaffold v4beta13 schema and refers to paths and
Services that exist; each check is then fed a broken configuration to prove it can fail."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import skaffold
from tests.deploy.conftest import REPO
from tests.deploy.tools import Manifest


def test_every_document_validates_against_the_v4beta13_schema(
    skaffold_documents: list[Manifest], skaffold_schema: dict[str, Any]
) -> None:
    assert len(skaffold_documents) == 1
    assert skaffold.schema_problems(skaffold_documents, skaffold_schema) == []


def test_artifact_contexts_dockerfiles_and_kustomize_paths_exist(
    skaffold_documents: list[Manifest],
) -> None:
    assert skaffold.path_problems(skaffold_documents, REPO) == []
    assert set(skaffold.kustomize_paths(skaffold_documents)) == {
        "infra/k8s/overlays/dev",
        "infra/k8s/overlays/prod",
    }


def test_profiles_dev_and_prod_and_status_checks(skaffold_documents: list[Manifest]) -> None:
    config = skaffold_documents[0]
    assert [p["name"] for p in config["profiles"]] == ["dev", "prod"]
    assert config["deploy"]["statusCheck"] is True
    assert config["manifests"]["kustomize"]["paths"] == ["infra/k8s/overlays/dev"]


def test_the_gateway_is_forwarded_from_a_rendered_service(
    skaffold_documents: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    for objects in rendered.values():
        assert skaffold.port_forward_problems(skaffold_documents, objects) == []
    forwards = skaffold_documents[0]["portForward"]
    assert [(f["resourceName"], f["port"]) for f in forwards] == [("gateway", 8000)]


def test_every_artifact_is_deployed(
    skaffold_documents: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    images = {
        c["image"]
        for objects in rendered.values()
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert skaffold.artifact_images(skaffold_documents) <= images


# --- finding the schema ---------------------------------------------------------------------


def test_the_schema_is_found_through_the_variable_first(tmp_path: Path) -> None:
    schema = tmp_path / "mine.json"
    schema.write_text("{}")
    found = skaffold.find_schema({skaffold.SCHEMA_VARIABLE: str(schema)})
    assert found == schema


def test_the_projects_own_schema_is_used_by_default() -> None:
    found = skaffold.find_schema({})
    assert found == skaffold.PROJECT_SCHEMA
    assert REPO in found.parents


def test_a_missing_schema_fails_naming_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(skaffold.SchemaMissingError, match="LODESTAR_SKAFFOLD_SCHEMA"):
        skaffold.find_schema({}, project_schema=tmp_path / "none.json")
    with pytest.raises(skaffold.SchemaMissingError, match=r"gone\.json is not a file"):
        skaffold.find_schema({skaffold.SCHEMA_VARIABLE: str(tmp_path / "gone.json")})


# --- each check fails on a broken input ---------------------------------------------------


@pytest.fixture
def config(skaffold_documents: list[Manifest]) -> dict[str, Any]:
    """A copy of skaffold.yaml's document a test may break."""
    return copy.deepcopy(skaffold_documents[0])


def test_an_unknown_field_is_caught(
    config: dict[str, Any], skaffold_schema: dict[str, Any]
) -> None:
    config["deploy"]["kubectl"]["manifests"] = ["k8s/*.yaml"]  # moved to manifests.rawYaml
    problems = skaffold.schema_problems([config], skaffold_schema)
    assert problems == [
        "document 0: deploy.kubectl: Additional properties are not allowed ('manifests' was "
        "unexpected)"
    ]


def test_a_wrong_type_is_caught(config: dict[str, Any], skaffold_schema: dict[str, Any]) -> None:
    config["deploy"]["statusCheckDeadlineSeconds"] = "ten minutes"
    config["portForward"][0]["port"] = [8000]
    problems = skaffold.schema_problems([config], skaffold_schema)
    assert len(problems) == 2
    assert problems[0].startswith("document 0: deploy.statusCheckDeadlineSeconds:")
    assert problems[1].startswith("document 0: portForward.0.port:")


def test_another_api_version_is_caught(
    config: dict[str, Any], skaffold_schema: dict[str, Any]
) -> None:
    config["apiVersion"] = "skaffold/v2beta29"
    assert skaffold.schema_problems([config], skaffold_schema) == [
        "document 0: apiVersion 'skaffold/v2beta29' != skaffold/v4beta13"
    ]


def test_missing_paths_are_caught(config: dict[str, Any]) -> None:
    config["build"]["artifacts"][0]["docker"]["dockerfile"] = "docker/Dockerfile"
    config["profiles"][1]["build"]["artifacts"][0]["context"] = "app"
    config["manifests"]["kustomize"]["paths"] = ["k8s/overlays/dev"]
    assert skaffold.path_problems([config], REPO) == [
        f"artifact lodestar: no Dockerfile at {REPO}/docker/Dockerfile",
        f"artifact lodestar: context {REPO}/app is no directory",
        "kustomize path k8s/overlays/dev has no kustomization file",
    ]


def test_a_forward_to_a_missing_service_or_port_is_caught(
    config: dict[str, Any], rendered: dict[str, list[Manifest]]
) -> None:
    config["portForward"].append(dict(config["portForward"][0], port=80))
    config["portForward"].append(dict(config["portForward"][0], resourceName="graphql"))
    config["portForward"].append(dict(config["portForward"][0], namespace="default"))
    assert skaffold.port_forward_problems([config], rendered["dev"]) == [
        "port-forward: gateway has no port 80",
        "port-forward: no Service lodestar/graphql",
        "port-forward: no Service default/gateway",
    ]


def test_a_typo_inside_an_artifact_is_pinpointed(
    config: dict[str, Any], skaffold_schema: dict[str, Any]
) -> None:
    config["build"]["artifacts"][0]["docker"]["dockerfil"] = "Dockerfile"
    assert skaffold.schema_problems([config], skaffold_schema) == [
        "document 0: build.artifacts.0.docker: Additional properties are not allowed "
        "('dockerfil' was unexpected)"
    ]
