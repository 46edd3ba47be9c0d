"""Checks a real API server (or a careful reviewer) makes on rendered Kubernetes objects.

Each check takes the rendered objects and returns one line per problem, naming the object;
an empty list means the objects pass. The schemas (kubernetes-validate) catch unknown fields
and wrong types; these checks catch what the schemas cannot: names, selectors that match
nothing, ports, probes, resources, the security context, images and dangling references.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import kubernetes_validate

from tests.deploy.objects import (
    LONG_RUNNING,
    container_ports,
    containers,
    find,
    items,
    mapping,
    pod_labels,
    pod_spec,
    ref,
    selected_workloads,
    workloads,
)
from tests.deploy.tools import Manifest

KUBERNETES_VERSION = "1.32"

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
# IANA service names: what Kubernetes accepts as a port name.
PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
PINNED_TAG = re.compile(r"v?\d+\.\d+\.\d+([-.+_][0-9A-Za-z.-]+)?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


# --- schemas -------------------------------------------------------------------------------


def schema_problems(
    objects: Iterable[Manifest],
    version: str = KUBERNETES_VERSION,
    allowed_kinds: Collection[str] = (),
) -> list[str]:
    """Strict validation against the Kubernetes schemas: an unknown field, a wrong type or a
    kind without a schema (unless allow-listed, e.g. a custom resource) is a problem."""
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if obj.get("kind") not in allowed_kinds:
                problems.append(
                    f"{ref(obj)}: no Kubernetes {version} schema for "
                    f"{obj.get('apiVersion')} {obj.get('kind')} (not allow-listed)"
                )
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(top)"
            problems.append(f"{ref(obj)}: {where}: {error.message}")
        except KeyError as missing:
            problems.append(f"{ref(obj)}: missing {missing}")
    return problems


# --- names ---------------------------------------------------------------------------------


def is_dns1123_label(name: str) -> bool:
    """Lowercase alphanumerics and '-', at most 63 characters (pod host names, containers)."""
    return len(name) <= 63 and DNS1123_LABEL.fullmatch(name) is not None


def is_dns1123_subdomain(name: str) -> bool:
    """Dot-separated labels, at most 253 characters (most object names)."""
    return len(name) <= 253 and all(is_dns1123_label(part) for part in name.split("."))


def is_dns1035_label(name: str) -> bool:
    """A label starting with a letter (Service names become DNS names and env prefixes)."""
    return len(name) <= 63 and DNS1035_LABEL.fullmatch(name) is not None


def object_name_problem(obj: Manifest) -> str | None:
    """The rule the API server applies to this kind's name, if it is broken."""
    name = str(mapping(obj.get("metadata")).get("name", ""))
    kind = obj.get("kind")
    if kind == "Service" and not is_dns1035_label(name):
        return f"{ref(obj)}: name {name!r} is not a DNS-1035 label"
    # A StatefulSet's pods are named <name>-<ordinal> and use that as their host name.
    if kind in {"Namespace", "StatefulSet"} and not is_dns1123_label(name):
        return f"{ref(obj)}: name {name!r} is not a DNS-1123 label"
    if not is_dns1123_subdomain(name):
        return f"{ref(obj)}: name {name!r} is not a DNS-1123 subdomain"
    return None


def name_problems(objects: Iterable[Manifest]) -> list[str]:
    """Object, namespace, container and volume names and ConfigMap keys the API accepts."""
    problems = []
    for obj in objects:
        problem = object_name_problem(obj)
        problems += [problem] if problem else []
        namespace = mapping(obj.get("metadata")).get("namespace")
        if namespace is not None and not is_dns1123_label(str(namespace)):
            problems.append(f"{ref(obj)}: namespace {namespace!r} is not a DNS-1123 label")
        problems += pod_name_problems(obj) if obj.get("kind") in LONG_RUNNING | {"Job"} else []
        if obj.get("kind") == "ConfigMap":
            problems += [
                f"{ref(obj)}: key {key!r} is not a valid ConfigMap key"
                for key in mapping(obj.get("data"))
                if len(key) > 253 or not CONFIG_KEY.fullmatch(key)
            ]
    return problems


def pod_name_problems(obj: Manifest) -> list[str]:
    """Container and volume names are DNS-1123 labels."""
    names = [("container", str(c.get("name", ""))) for c in containers(obj)]
    names += [
        ("volume", str(mapping(v).get("name", ""))) for v in items(pod_spec(obj).get("volumes"))
    ]
    return [
        f"{ref(obj)}: {what} name {name!r} is not a DNS-1123 label"
        for what, name in names
        if not is_dns1123_label(name)
    ]


# --- selectors and services ----------------------------------------------------------------


def selector_problems(objects: Iterable[Manifest]) -> list[str]:
    """A workload's selector.matchLabels must be a subset of its pod template's labels."""
    problems = []
    for obj in workloads(list(objects)):
        match = mapping(mapping(mapping(obj.get("spec")).get("selector")).get("matchLabels"))
        labels = pod_labels(obj)
        missing = {k: v for k, v in match.items() if labels.get(k) != v}
        if missing:
            problems.append(f"{ref(obj)}: selector {missing} not among pod labels {labels}")
    return problems


def service_problems(objects: list[Manifest]) -> list[str]:
    """Every Service and PodDisruptionBudget selects a workload, and every Service targetPort
    names (or numbers) a port those pods declare."""
    problems = []
    for obj in objects:
        if obj.get("kind") == "Service":
            problems += service_target_problems(objects, obj)
        elif obj.get("kind") == "PodDisruptionBudget":
            selector = mapping(mapping(mapping(obj.get("spec")).get("selector")).get("matchLabels"))
            if not selected_workloads(objects, selector):
                problems.append(f"{ref(obj)}: selector {selector} selects no workload")
    return problems


def service_target_problems(objects: list[Manifest], service: Manifest) -> list[str]:
    """One Service: its selector picks pods that declare each of its target ports."""
    spec = mapping(service.get("spec"))
    if spec.get("type") == "ExternalName" or "selector" not in spec:
        return []
    selector = mapping(spec.get("selector"))
    targets = selected_workloads(objects, selector)
    if not targets:
        return [f"{ref(service)}: selector {selector} selects no workload"]
    declared = [p for w in targets for p in container_ports(w)]
    names = {p.get("name") for p in declared}
    numbers = {p.get("containerPort") for p in declared}
    problems = []
    for port in items(spec.get("ports")):
        target = mapping(port).get("targetPort", mapping(port).get("port"))
        if target not in (names if isinstance(target, str) else numbers):
            problems.append(f"{ref(service)}: targetPort {target!r} is no port of the pods")
    return problems


def port_name_problems(objects: Iterable[Manifest]) -> list[str]:
    """Container and Service port names are IANA service names: at most 15 characters,
    lowercase alphanumerics and '-', at least one letter, no '--'."""
    problems = []
    for obj in objects:
        if obj.get("kind") == "Service":
            ports = items(mapping(obj.get("spec")).get("ports"))
        elif obj.get("kind") in LONG_RUNNING | {"Job", "CronJob"}:
            ports = container_ports(obj)
        else:
            continue
        for port in ports:
            name = mapping(port).get("name")
            if name is not None and not is_port_name(str(name)):
                problems.append(f"{ref(obj)}: port name {name!r} is not an IANA service name")
    return problems


def is_port_name(name: str) -> bool:
    """Kubernetes' IsValidPortName."""
    return (
        len(name) <= 15
        and PORT_NAME.fullmatch(name) is not None
        and "--" not in name
        and any(ch.isalpha() for ch in name)
    )


# --- containers ----------------------------------------------------------------------------


def container_problems(objects: Iterable[Manifest]) -> list[str]:
    """Every container has requests and limits and the hardened security context; every
    long-running main container has readiness and liveness probes on ports it declares."""
    problems = []
    for obj in workloads(list(objects)):
        pod = pod_spec(obj)
        mains = [id(c) for c in containers(obj, init=False)]
        for container in containers(obj):
            where = f"{ref(obj)} container {container.get('name')!r}"
            if obj.get("kind") in LONG_RUNNING and id(container) in mains:
                problems += [f"{where}: {p}" for p in probe_problems(container)]
            problems += [f"{where}: {p}" for p in resource_problems(container)]
            problems += [f"{where}: {p}" for p in security_problems(pod, container)]
    return problems


def probe_problems(container: Mapping[str, Any]) -> list[str]:
    """Readiness and liveness probes exist and check a port the container declares."""
    ports = [mapping(p) for p in items(container.get("ports"))]
    names = {p.get("name") for p in ports}
    numbers = {p.get("containerPort") for p in ports}
    problems = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = mapping(container.get(kind))
        if not probe:
            problems += [] if kind == "startupProbe" else [f"no {kind}"]
            continue
        for handler in ("grpc", "httpGet", "tcpSocket"):
            port = mapping(probe.get(handler)).get("port")
            if port is not None and port not in (names if isinstance(port, str) else numbers):
                problems.append(f"{kind} {handler} port {port!r} is not a declared port")
    return problems


def resource_problems(container: Mapping[str, Any]) -> list[str]:
    """CPU and memory requests (for scheduling) and limits (so one pod cannot starve a node)."""
    resources = mapping(container.get("resources"))
    return [
        f"no {section}.{resource}"
        for section in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in mapping(resources.get(section))
    ]


def security_problems(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """Non-root, read-only root filesystem, all capabilities dropped, no privilege
    escalation, the runtime's seccomp profile (the "restricted" Pod Security Standard)."""
    pod_context = mapping(pod.get("securityContext"))
    context = mapping(container.get("securityContext"))

    def effective(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    problems = []
    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append("runAsUser is 0 (root)")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if context.get("privileged") is True:
        problems.append("privileged")
    if "ALL" not in items(mapping(context.get("capabilities")).get("drop")):
        problems.append("capabilities do not drop ALL")
    if items(mapping(context.get("capabilities")).get("add")):
        problems.append("capabilities are added")
    if mapping(effective("seccompProfile")).get("type") not in {"RuntimeDefault", "Localhost"}:
        problems.append("seccompProfile is not RuntimeDefault")
    return problems


# --- images --------------------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag, digest); a ':' before the last '/' is a
    registry port, not a tag."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None


def image_problem(image: str, artifacts: Collection[str]) -> str | None:
    """An image is built by skaffold (an artifact, tagged at deploy time) or pinned: a digest
    or an exact x.y.z tag, never ``latest`` or a floating ``8.0``."""
    if image in artifacts:
        return None
    _, tag, digest = split_image(image)
    if digest is not None:
        return None if DIGEST.fullmatch(digest) else f"image {image!r} has a malformed digest"
    if tag is None or tag == "latest":
        return f"image {image!r} is neither a skaffold artifact nor pinned (no tag or latest)"
    if PINNED_TAG.fullmatch(tag) is None:
        return f"image {image!r} has a floating tag {tag!r} (pin x.y.z or a digest)"
    return None


def image_problems(objects: Iterable[Manifest], artifacts: Collection[str]) -> list[str]:
    """Every container image is a skaffold artifact or pinned."""
    problems = []
    for obj in workloads(list(objects)):
        for container in containers(obj):
            problem = image_problem(str(container.get("image", "")), artifacts)
            problems += (
                [f"{ref(obj)} container {container.get('name')!r}: {problem}"] if problem else []
            )
    return problems


# --- references ----------------------------------------------------------------------------


def reference_problems(objects: list[Manifest]) -> list[str]:
    """What a pod or route would trip over at run time: a missing ConfigMap, key,
    ServiceAccount, HPA target, Ingress backend or headless Service; and no Secret values
    committed (Secrets are created by hand, see the README)."""
    problems = [
        f"{ref(o)}: Secrets are never committed" for o in objects if o.get("kind") == "Secret"
    ]
    for obj in workloads(objects):
        problems += [f"{ref(obj)}: {p}" for p in pod_reference_problems(objects, obj)]
    for obj in objects:
        problems += [f"{ref(obj)}: {p}" for p in routing_problems(objects, obj)]
    return problems


def config_map_refs(obj: Manifest) -> list[tuple[str, str | None, bool]]:
    """(ConfigMap name, key or None, optional) for every ConfigMap a workload's pods read."""
    found: list[tuple[str, str | None, bool]] = []
    for container in containers(obj):
        for source in items(container.get("envFrom")):
            cm = mapping(mapping(source).get("configMapRef"))
            found += [(str(cm["name"]), None, bool(cm.get("optional")))] if cm else []
        for var in items(container.get("env")):
            key_ref = mapping(mapping(mapping(var).get("valueFrom")).get("configMapKeyRef"))
            if key_ref:
                found.append(
                    (str(key_ref["name"]), str(key_ref["key"]), bool(key_ref.get("optional")))
                )
    for volume in items(pod_spec(obj).get("volumes")):
        cm = mapping(mapping(volume).get("configMap"))
        found += [(str(cm["name"]), None, bool(cm.get("optional")))] if cm else []
    return found


def pod_reference_problems(objects: list[Manifest], obj: Manifest) -> list[str]:
    """ConfigMaps (and keys) and the ServiceAccount a workload's pods need exist."""
    problems = []
    for name, key, optional in config_map_refs(obj):
        found = find(objects, "ConfigMap", name)
        if found is None and not optional:
            problems.append(f"ConfigMap {name!r} does not exist")
        elif found is not None and key is not None and key not in mapping(found.get("data")):
            problems.append(f"ConfigMap {name!r} has no key {key!r}")
    account = pod_spec(obj).get("serviceAccountName")
    if account and find(objects, "ServiceAccount", str(account)) is None:
        problems.append(f"ServiceAccount {account!r} does not exist")
    return problems


def routing_problems(objects: list[Manifest], obj: Manifest) -> list[str]:
    """HPA targets, Ingress backends and StatefulSet governing Services exist."""
    spec = mapping(obj.get("spec"))
    kind = obj.get("kind")
    if kind == "HorizontalPodAutoscaler":
        target = mapping(spec.get("scaleTargetRef"))
        if find(objects, str(target.get("kind")), str(target.get("name"))) is None:
            return [f"scale target {target.get('kind')}/{target.get('name')} does not exist"]
    if kind == "Ingress":
        return ingress_problems(objects, spec)
    if kind == "StatefulSet":
        service = find(objects, "Service", str(spec.get("serviceName")))
        if service is None or mapping(service.get("spec")).get("clusterIP") != "None":
            return [f"serviceName {spec.get('serviceName')!r} is not a headless Service"]
    return []


def ingress_problems(objects: list[Manifest], spec: Mapping[str, Any]) -> list[str]:
    """Each Ingress backend is an existing Service port."""
    problems = []
    for rule in items(spec.get("rules")):
        for path in items(mapping(mapping(rule).get("http")).get("paths")):
            backend = mapping(mapping(mapping(path).get("backend")).get("service"))
            service = find(objects, "Service", str(backend.get("name")))
            port = mapping(backend.get("port"))
            ports = items(mapping(service.get("spec")).get("ports")) if service else []
            if service is None:
                problems.append(f"backend Service {backend.get('name')!r} does not exist")
            elif not any(
                mapping(p).get("name") == port.get("name", object())
                or mapping(p).get("port") == port.get("number", object())
                for p in ports
            ):
                problems.append(f"backend Service {backend.get('name')!r} has no port {port}")
    return problems


def secret_references(objects: Iterable[Manifest]) -> dict[str, set[str]]:
    """Secret name -> the keys read from it (empty for whole-Secret mounts and TLS)."""
    found: dict[str, set[str]] = {}
    for obj in objects:
        if obj.get("kind") == "Ingress":
            for tls in items(mapping(obj.get("spec")).get("tls")):
                found.setdefault(str(mapping(tls).get("secretName")), set())
        if obj.get("kind") not in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}:
            continue
        for volume in items(pod_spec(obj).get("volumes")):
            secret = mapping(mapping(volume).get("secret"))
            found.setdefault(str(secret["secretName"]), set()) if secret else None
        for container in containers(obj):
            for var in items(container.get("env")):
                key_ref = mapping(mapping(mapping(var).get("valueFrom")).get("secretKeyRef"))
                if key_ref:
                    found.setdefault(str(key_ref["name"]), set()).add(str(key_ref["key"]))
    return found
