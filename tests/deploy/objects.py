"""Navigation over rendered Kubernetes objects: workloads, their pods, containers and env.

Every check reads objects through these helpers, so a new workload kind is taught once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tests.deploy.tools import Manifest

# Kinds whose pods run until stopped: they need readiness and liveness probes.
LONG_RUNNING = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
WORKLOADS = LONG_RUNNING | {"Job", "CronJob"}


def ref(obj: Manifest) -> str:
    """``Kind/name``, how problems name an object."""
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def mapping(value: object) -> dict[str, Any]:
    """``value`` itself if it is a mapping (so checks see, and tests can change, the real
    object), else an empty one: absent fields read as empty."""
    if isinstance(value, dict):
        return value
    return dict(value) if isinstance(value, Mapping) else {}


def items(value: object) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return list(value) if isinstance(value, list) else []


def find(objects: list[Manifest], kind: str, name: str) -> Manifest | None:
    """The object of that kind and name, if rendered."""
    for obj in objects:
        if obj.get("kind") == kind and mapping(obj.get("metadata")).get("name") == name:
            return obj
    return None


def pod_template(obj: Manifest) -> dict[str, Any]:
    """A workload's pod template (CronJobs nest it one level deeper)."""
    spec = mapping(obj.get("spec"))
    if obj.get("kind") == "CronJob":
        spec = mapping(mapping(spec.get("jobTemplate")).get("spec"))
    return mapping(spec.get("template"))


def pod_spec(obj: Manifest) -> dict[str, Any]:
    """A workload's pod spec."""
    return mapping(pod_template(obj).get("spec"))


def pod_labels(obj: Manifest) -> dict[str, str]:
    """The labels a workload's pods carry."""
    return mapping(mapping(pod_template(obj).get("metadata")).get("labels"))


def workloads(objects: list[Manifest]) -> Iterator[Manifest]:
    """Every object that runs pods."""
    return (obj for obj in objects if obj.get("kind") in WORKLOADS)


def containers(obj: Manifest, *, init: bool = True) -> Iterator[dict[str, Any]]:
    """A workload's containers, init containers first (unless ``init`` is false)."""
    spec = pod_spec(obj)
    keys = ("initContainers", "containers") if init else ("containers",)
    for key in keys:
        yield from (mapping(c) for c in items(spec.get(key)))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A non-empty label selector matches when every pair is among the labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected_workloads(objects: list[Manifest], selector: Mapping[str, str]) -> list[Manifest]:
    """The workloads whose pods a selector picks."""
    return [w for w in workloads(objects) if selects(selector, pod_labels(w))]


def config_map_data(objects: list[Manifest], name: str) -> dict[str, str] | None:
    """A rendered ConfigMap's data, or None when there is no such ConfigMap."""
    found = find(objects, "ConfigMap", name)
    return None if found is None else mapping(found.get("data"))


def effective_env(objects: list[Manifest], container: Mapping[str, Any]) -> dict[str, str | None]:
    """The environment a container starts with: envFrom ConfigMaps, then env (which wins).

    A value that comes from a Secret or the downward API is None: it is set, but not here.
    """
    env: dict[str, str | None] = {}
    for source in items(container.get("envFrom")):
        name = mapping(mapping(source).get("configMapRef")).get("name")
        env.update((config_map_data(objects, str(name)) or {}) if name else {})
    for var in items(container.get("env")):
        env[str(var["name"])] = env_value(objects, mapping(var))
    return env


def env_value(objects: list[Manifest], var: Mapping[str, Any]) -> str | None:
    """One env entry's value, following a configMapKeyRef."""
    if "value" in var:
        return str(var["value"])
    key_ref = mapping(mapping(var.get("valueFrom")).get("configMapKeyRef"))
    if key_ref:
        data = config_map_data(objects, str(key_ref.get("name"))) or {}
        return data.get(str(key_ref.get("key")))
    return None


def container_ports(obj: Manifest) -> list[dict[str, Any]]:
    """Every port the workload's containers declare."""
    return [mapping(p) for c in containers(obj) for p in items(c.get("ports"))]
