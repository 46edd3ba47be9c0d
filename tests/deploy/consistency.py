"""Checks that the manifests agree with the code they deploy: setting names, ports, the
Kafka topics and partition bound, the Kafka quorum and the MongoDB replica set.

The code is the source of truth (services/*/settings.py, services/platform/topics.py); a
setting renamed there or a topic added fails these checks until the manifests follow.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic_settings import BaseSettings

from services.platform import topics
from services.platform.settings import CommonSettings
from tests.deploy.objects import (
    containers,
    effective_env,
    find,
    items,
    mapping,
    pod_labels,
    pod_spec,
    ref,
    selects,
    workloads,
)
from tests.deploy.tools import Manifest

PARTITIONS = "LODESTAR_KAFKA_TOPIC_PARTITIONS"
REPLICATION = "LODESTAR_KAFKA_REPLICATION_FACTOR"
# Each settings field that is a port, and the container port name that must carry it.
PORT_FIELDS = {
    "grpc_port": "grpc",
    "http_port": "http",
    "metrics_port": "metrics",
    "passkit_port": "passkit",
}


def lodestar_containers(
    objects: list[Manifest], image: str
) -> Iterable[tuple[Manifest, dict[str, Any], str]]:
    """(workload, container, module) for each container running a Lodestar process: the
    project image, whose first argument is the module (``gateway``, ``services.identity``)."""
    for obj in workloads(objects):
        for container in containers(obj):
            args = items(container.get("args"))
            if container.get("image") == image and args:
                yield obj, container, str(args[0])


def settings_type(module: str) -> type[BaseSettings]:
    """The settings class a process module loads (``<module>.settings``)."""
    settings_module = importlib.import_module(f"{module}.settings")
    found = [
        value
        for value in vars(settings_module).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value.__module__ == settings_module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module}.settings defines {len(found)} settings classes, not one")
    return found[0]


def env_names(settings: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name, as pydantic-settings reads them."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = {}
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        names[alias if isinstance(alias, str) else f"{prefix}{field_name}".upper()] = field_name
    return names


def settings_problems(objects: list[Manifest], image: str) -> list[str]:
    """Every ``LODESTAR_*`` variable a process gets is one of its settings, every required
    setting is given, and the port settings match the ports the container declares."""
    problems = []
    for obj, container, module in lodestar_containers(objects, image):
        where = f"{ref(obj)} ({module})"
        try:
            names = env_names(settings_type(module))
        except (ImportError, LookupError) as error:
            problems.append(f"{where}: {error}")
            continue
        env = effective_env(objects, container)
        problems += [
            f"{where}: {var} is not a setting of {module}"
            for var in env
            if var.startswith("LODESTAR_") and var not in names
        ]
        problems += required_problems(where, module, env)
        problems += port_setting_problems(where, container, env, names)
    return problems


def required_problems(where: str, module: str, env: Mapping[str, str | None]) -> list[str]:
    """Settings without a default stop start-up when unset."""
    names = env_names(settings := settings_type(module))
    return [
        f"{where}: required {var} is not set"
        for var, field_name in names.items()
        if settings.model_fields[field_name].is_required() and var not in env
    ]


def port_setting_problems(
    where: str,
    container: Mapping[str, Any],
    env: Mapping[str, str | None],
    names: Mapping[str, str],
) -> list[str]:
    """The process listens where the container, probes and Service expect it."""
    declared = {
        mapping(p).get("name"): mapping(p).get("containerPort")
        for p in items(container.get("ports"))
    }
    problems = []
    for var, field_name in names.items():
        port_name = PORT_FIELDS.get(field_name)
        value = env.get(var)
        if port_name is None or value is None or value == "0":
            continue
        if declared.get(port_name) != int(value):
            problems.append(
                f"{where}: {var}={value} but container port {port_name!r} is "
                f"{declared.get(port_name)}"
            )
    return problems


# --- Kafka ---------------------------------------------------------------------------------


def consumer_modules(repo: Path) -> set[str]:
    """Services that join Kafka consumer groups (their server.py subscribes)."""
    return {
        f"services.{server.parent.name}"
        for server in (repo / "services").glob("*/server.py")
        if re.search(r"\.subscribe\(", server.read_text())
    }


def partitions_of(env: Mapping[str, str | None]) -> int:
    """The partition count a process creates and expects topics with."""
    default = CommonSettings.model_fields["kafka_topic_partitions"].default
    return int(env.get(PARTITIONS) or default)


def autoscaler_problems(objects: list[Manifest], image: str, consumers: set[str]) -> list[str]:
    """Each Kafka consumer has an HPA bounded by the partition count (a pod beyond it would
    own no partition); an HPA's target leaves replicas to it; min <= max."""
    hpas = {
        str(mapping(mapping(h.get("spec")).get("scaleTargetRef")).get("name")): h
        for h in objects
        if h.get("kind") == "HorizontalPodAutoscaler"
    }
    problems = []
    for obj, container, module in lodestar_containers(objects, image):
        name = str(mapping(obj.get("metadata")).get("name"))
        hpa = hpas.get(name)
        if hpa is None:
            problems += [f"{ref(obj)}: Kafka consumer without an autoscaler"] * (
                module in consumers
            )
            continue
        spec = mapping(hpa.get("spec"))
        bound = partitions_of(effective_env(objects, container))
        if module in consumers and int(spec.get("maxReplicas", 0)) > bound:
            problems.append(
                f"{ref(hpa)}: maxReplicas {spec.get('maxReplicas')} > {bound} partitions"
            )
        if int(spec.get("minReplicas", 1)) > int(spec.get("maxReplicas", 0)):
            problems.append(f"{ref(hpa)}: minReplicas > maxReplicas")
        if "replicas" in mapping(obj.get("spec")):
            problems.append(f"{ref(obj)}: sets replicas although {ref(hpa)} owns the count")
    return problems


def topic_lines(objects: list[Manifest]) -> tuple[Manifest, list[tuple[str, str]]] | None:
    """The ConfigMap holding topics.txt and its (topic, kind) lines."""
    for obj in objects:
        text = (
            mapping(obj.get("data")).get("topics.txt") if obj.get("kind") == "ConfigMap" else None
        )
        if text is not None:
            lines = [line.split() for line in str(text).splitlines()]
            return obj, [(p[0], p[1] if len(p) > 1 else "") for p in lines if p and p[0][0] != "#"]
    return None


def topic_problems(objects: list[Manifest], image: str) -> list[str]:
    """The topic Job creates exactly the topics of services/platform/topics.py, the event
    topics with their retention, and with the partitions and replication factor the
    services are configured with."""
    found = topic_lines(objects)
    if found is None:
        return ["no ConfigMap lists the Kafka topics (topics.txt)"]
    config_map, lines = found
    names = [name for name, _ in lines]
    problems = [
        f"{ref(config_map)}: topic {n} listed twice" for n in set(names) if names.count(n) > 1
    ]
    if set(names) != set(topics.ALL_TOPICS):
        problems.append(
            f"{ref(config_map)}: topics {sorted(set(names) ^ set(topics.ALL_TOPICS))} differ "
            "from services/platform/topics.py"
        )
    events = {name for name, kind in lines if kind == "events"}
    if events != set(topics.EVENT_TOPICS):
        problems.append(
            f"{ref(config_map)}: event topics {sorted(events)} != {topics.EVENT_TOPICS}"
        )
    return problems + topic_job_problems(objects, image, str(config_map["metadata"]["name"]))


def topic_job_problems(objects: list[Manifest], image: str, config_map: str) -> list[str]:
    """The Job mounting the topic list uses the services' partitions and replication."""
    jobs = [
        j
        for j in objects
        if j.get("kind") == "Job"
        and any(
            mapping(mapping(v).get("configMap")).get("name") == config_map
            for v in items(pod_spec(j).get("volumes"))
        )
    ]
    if not jobs:
        return [f"no Job mounts ConfigMap/{config_map} to create the topics"]
    service_envs = [effective_env(objects, c) for _, c, _ in lodestar_containers(objects, image)]
    problems = []
    for job in jobs:
        job_env = effective_env(objects, next(containers(job, init=False)))
        for var in (PARTITIONS, REPLICATION):
            wanted = {env.get(var) for env in service_envs}
            if job_env.get(var) is None or wanted != {job_env.get(var)}:
                problems.append(f"{ref(job)}: {var}={job_env.get(var)} but services use {wanted}")
    return problems


def statefulsets_running(objects: list[Manifest], image_prefix: str) -> list[Manifest]:
    """StatefulSets whose main container runs an image of that repository."""
    return [
        obj
        for obj in objects
        if obj.get("kind") == "StatefulSet"
        and any(str(c.get("image", "")).startswith(image_prefix) for c in containers(obj))
    ]


def member_hosts(statefulset: Manifest, port_name: str) -> list[str]:
    """``<name>-<i>.<headless service>:<port>`` for each replica: the stable pod addresses."""
    spec = mapping(statefulset.get("spec"))
    port = next(
        (
            mapping(p).get("containerPort")
            for c in containers(statefulset)
            for p in items(c.get("ports"))
            if mapping(p).get("name") == port_name
        ),
        None,
    )
    name = statefulset["metadata"]["name"]
    return [f"{name}-{i}.{spec.get('serviceName')}:{port}" for i in range(spec.get("replicas", 1))]


def kafka_problems(objects: list[Manifest], image: str) -> list[str]:
    """The KRaft quorum lists every node, replication fits the nodes (3 copies and
    min.insync.replicas 2 from three nodes on), and the services' replication factor and
    bootstrap address point at this cluster."""
    clusters = statefulsets_running(objects, "apache/kafka:")
    if len(clusters) != 1:
        return [f"expected one Kafka StatefulSet, found {len(clusters)}"]
    kafka = clusters[0]
    nodes = int(mapping(kafka.get("spec")).get("replicas", 1))
    env = effective_env(objects, next(containers(kafka, init=False)))
    voters = [f"{i}@{host}" for i, host in enumerate(member_hosts(kafka, "controller"))]
    problems = []
    if str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")).split(",") != voters:
        problems.append(
            f"{ref(kafka)}: quorum voters {env.get('KAFKA_CONTROLLER_QUORUM_VOTERS')} != {voters}"
        )
    factor = int(env.get("KAFKA_DEFAULT_REPLICATION_FACTOR") or 1)
    min_isr = int(env.get("KAFKA_MIN_INSYNC_REPLICAS") or 1)
    internal = int(env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") or 3)
    if max(factor, internal) > nodes:
        problems.append(f"{ref(kafka)}: replication factor above the {nodes} node(s)")
    if nodes >= 3 and (factor < 3 or min_isr != 2):
        problems.append(f"{ref(kafka)}: {nodes} nodes but replication {factor}, min ISR {min_isr}")
    if factor > 1 and min_isr >= factor:
        problems.append(f"{ref(kafka)}: min.insync.replicas {min_isr} leaves no broker to lose")
    return problems + kafka_client_problems(objects, image, kafka, nodes)


def kafka_client_problems(
    objects: list[Manifest], image: str, kafka: Manifest, nodes: int
) -> list[str]:
    """Services create topics with at most as many copies as there are nodes, and bootstrap
    through a Service in front of the Kafka pods' client port."""
    problems = []
    for obj, container, _ in lodestar_containers(objects, image):
        env = effective_env(objects, container)
        if int(env.get(REPLICATION) or 1) > nodes:
            problems.append(f"{ref(obj)}: {REPLICATION}={env.get(REPLICATION)} > {nodes} node(s)")
        for address in str(env.get("LODESTAR_KAFKA_BOOTSTRAP_SERVERS") or "").split(","):
            if not fronts(objects, address, kafka):
                problems.append(f"{ref(obj)}: bootstrap {address!r} is no Service port of Kafka")
    return problems


def fronts(objects: list[Manifest], address: str, workload: Manifest) -> bool:
    """``host:port`` is a port of a Service (named by the host's first label) that selects
    the workload's pods."""
    host, _, port = address.partition(":")
    service = find(objects, "Service", host.split(".")[0])
    if service is None or not port.isdigit():
        return False
    spec = mapping(service.get("spec"))
    ports = {mapping(p).get("port") for p in items(spec.get("ports"))}
    return int(port) in ports and selects(mapping(spec.get("selector")), pod_labels(workload))


# --- MongoDB -------------------------------------------------------------------------------


def replica_set_name(mongod: Manifest) -> str | None:
    """The --replSet mongod runs with."""
    args = [
        str(a)
        for c in containers(mongod, init=False)
        for a in items(c.get("command")) + items(c.get("args"))
    ]
    for i, arg in enumerate(args):
        if arg.startswith("--replSet="):
            return arg.partition("=")[2]
        if arg == "--replSet" and i + 1 < len(args):
            return args[i + 1]
    return None


def mongo_problems(objects: list[Manifest], image: str) -> list[str]:
    """Services connect with replicaSet=<the set mongod runs> and list every member; the
    init Job initiates the same set with the same members."""
    sets = statefulsets_running(objects, "mongo:")
    if len(sets) != 1:
        return [f"expected one MongoDB StatefulSet, found {len(sets)}"]
    mongod = sets[0]
    name = replica_set_name(mongod)
    members = member_hosts(mongod, "mongo")
    problems = [] if name else [f"{ref(mongod)}: mongod runs without --replSet"]
    for obj, container, _ in lodestar_containers(objects, image):
        uri = effective_env(objects, container).get("LODESTAR_MONGO_URI")
        if uri is None:
            continue
        parts = urlsplit(uri)
        replica_set = parse_qs(parts.query).get("replicaSet", [None])[0]
        if replica_set != name:
            problems.append(
                f"{ref(obj)}: LODESTAR_MONGO_URI replicaSet={replica_set}, mongod runs {name}"
            )
        if parts.netloc.rpartition("@")[2].split(",") != members:
            problems.append(f"{ref(obj)}: LODESTAR_MONGO_URI hosts {parts.netloc} != {members}")
    return problems + mongo_init_problems(objects, name, members)


def mongo_init_problems(objects: list[Manifest], name: str | None, members: list[str]) -> list[str]:
    """The Job that runs rs.initiate names the set and every member."""
    jobs = [
        (job, effective_env(objects, c))
        for job in objects
        if job.get("kind") == "Job"
        for c in containers(job, init=False)
        if "MONGO_MEMBERS" in effective_env(objects, c)
    ]
    if not jobs:
        return ["no Job initiates the MongoDB replica set (MONGO_MEMBERS)"]
    problems = []
    for job, env in jobs:
        if (
            env.get("MONGO_REPLICA_SET") != name
            or str(env.get("MONGO_MEMBERS")).split(",") != members
        ):
            problems.append(
                f"{ref(job)}: initiates {env.get('MONGO_REPLICA_SET')} with "
                f"{env.get('MONGO_MEMBERS')}, expected {name} with {members}"
            )
    return problems


# --- Secrets -------------------------------------------------------------------------------


def secret_commands(readme: str) -> dict[str, str]:
    """Secret name -> the README's ``kubectl create secret`` command that makes it."""
    joined = re.sub(r"\\\n\s*", " ", readme)
    found = {}
    for match in re.finditer(
        r"kubectl\b[^\n]*?create secret (?:generic|tls) ([a-z0-9.-]+)[^\n]*", joined
    ):
        found[match.group(1)] = match.group(0)
    return found


def secret_doc_problems(references: Mapping[str, set[str]], readme: str) -> list[str]:
    """Every Secret the manifests read is created by a documented command, with each key."""
    commands = secret_commands(readme)
    problems = []
    for name, keys in sorted(references.items()):
        command = commands.get(name)
        if command is None:
            problems.append(f"Secret {name} has no 'kubectl create secret' command in the README")
            continue
        problems += [
            f"Secret {name}: the README's command does not set key {key}"
            for key in sorted(keys)
            if not re.search(rf"--from-(literal|file)={re.escape(key)}=", command)
        ]
    return problems
