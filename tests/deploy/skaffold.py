"""Checks of skaffold.yaml: the v4beta13 JSON schema, and the paths and names it refers to.

The schema is the project's own (tests/deploy/schemas/: the part of v4beta13 that
skaffold.yaml uses, strict), or a fuller one named by LODESTAR_SKAFFOLD_SCHEMA. A missing
schema fails the run naming where it looked; it is never skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from tests.deploy.objects import find, items, mapping
from tests.deploy.tools import Manifest

API_VERSION = "skaffold/v4beta13"
SCHEMA_FILE = "skaffold-v4beta13.json"
SCHEMA_VARIABLE = "LODESTAR_SKAFFOLD_SCHEMA"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
PROJECT_SCHEMA = Path(__file__).resolve().parent / "schemas" / SCHEMA_FILE


class SchemaMissingError(RuntimeError):
    """The skaffold schema is in none of the places looked at."""


def find_schema(environ: Mapping[str, str], project_schema: Path = PROJECT_SCHEMA) -> Path:
    """The schema file: the variable's if set (and then only it), else the project's own."""
    if environ.get(SCHEMA_VARIABLE):
        chosen = Path(environ[SCHEMA_VARIABLE])
        if not chosen.is_file():
            raise SchemaMissingError(f"{SCHEMA_VARIABLE}={chosen} is not a file")
        return chosen
    if project_schema.is_file():
        return project_schema
    raise SchemaMissingError(
        f"the skaffold schema is not at {project_schema}; set {SCHEMA_VARIABLE} to its path"
    )


def load_schema(path: Path) -> dict[str, Any]:
    """The schema as JSON, itself checked against its metaschema."""
    schema: dict[str, Any] = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


def single_root(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with a one-branch top-level ``anyOf`` inlined, so errors point at the
    field that is wrong instead of "not valid under any of the given schemas"."""
    root = {key: value for key, value in schema.items() if key != "anyOf"}
    branches = items(schema.get("anyOf"))
    if len(branches) == 1:
        root.update(mapping(branches[0]))
    elif branches:
        root["anyOf"] = branches
    return root


def most_relevant(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Inside an ``anyOf`` (a build is local, cluster or cloud; an artifact is one of many
    builders), the deepest branch error: the branch that matched furthest is the intended one."""
    if error.context:
        return most_relevant(max(error.context, key=lambda e: len(e.absolute_path)))
    return error


def schema_problems(documents: Iterable[Manifest], schema: Mapping[str, Any]) -> list[str]:
    """Each YAML document validates against the schema; ``apiVersion`` is checked apart,
    because the schema accepts any string there."""
    validator = jsonschema.validators.validator_for(schema)(single_root(schema))
    problems = []
    for index, doc in enumerate(documents):
        if doc.get("apiVersion") != API_VERSION:
            problems.append(
                f"document {index}: apiVersion {doc.get('apiVersion')!r} != {API_VERSION}"
            )
        errors = [most_relevant(e) for e in validator.iter_errors(doc)]
        for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
            where = ".".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"document {index}: {where}: {error.message}")
    return problems


def configs(documents: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Each document and each of its profiles: the places build and manifests appear."""
    found = []
    for doc in documents:
        found.append(doc)
        found += [mapping(p) for p in items(doc.get("profiles"))]
    return found


def artifacts(documents: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Every build artifact, profiles included."""
    return [
        mapping(a)
        for config in configs(documents)
        for a in items(mapping(config.get("build")).get("artifacts"))
    ]


def artifact_images(documents: Iterable[Manifest]) -> set[str]:
    """The image names skaffold builds (and substitutes in the manifests)."""
    return {str(a.get("image")) for a in artifacts(documents)}


def kustomize_paths(documents: Iterable[Manifest]) -> list[str]:
    """Every kustomization skaffold renders, profiles included."""
    return [
        str(path)
        for config in configs(documents)
        for path in items(mapping(mapping(config.get("manifests")).get("kustomize")).get("paths"))
    ]


def path_problems(documents: list[Manifest], repo: Path) -> list[str]:
    """Every artifact context and Dockerfile, and every kustomize path, exists."""
    problems = []
    for artifact in artifacts(documents):
        context = repo / str(artifact.get("context", "."))
        dockerfile = context / str(mapping(artifact.get("docker")).get("dockerfile", "Dockerfile"))
        if not context.is_dir():
            problems.append(f"artifact {artifact.get('image')}: context {context} is no directory")
        elif not dockerfile.is_file():
            problems.append(f"artifact {artifact.get('image')}: no Dockerfile at {dockerfile}")
    for path in kustomize_paths(documents):
        if not any((repo / path / name).is_file() for name in KUSTOMIZATION_FILES):
            problems.append(f"kustomize path {path} has no kustomization file")
    return problems


def port_forward_problems(documents: Iterable[Manifest], objects: list[Manifest]) -> list[str]:
    """Each forwarded Service exists in the rendered manifests, in that namespace, with
    that port."""
    problems = []
    for config in configs(documents):
        for forward in items(config.get("portForward")):
            rule = mapping(forward)
            if rule.get("resourceType") != "service":
                continue
            service = find(objects, "Service", str(rule.get("resourceName")))
            meta = mapping(mapping(service).get("metadata"))
            ports = {
                mapping(p).get("port")
                for p in items(mapping(mapping(service).get("spec")).get("ports"))
            }
            if service is None or meta.get("namespace") != rule.get("namespace"):
                problems.append(
                    f"port-forward: no Service {rule.get('namespace')}/{rule.get('resourceName')}"
                )
            elif rule.get("port") not in ports:
                problems.append(
                    f"port-forward: {rule.get('resourceName')} has no port {rule.get('port')}"
                )
    return problems
