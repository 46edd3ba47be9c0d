"""The manifests agree with the code they deploy (settings, ports, topics, partitions, the
Kafka quorum, the MongoDB replica set) and the README creates every Secret they read; each
check is then fed a broken copy to prove it can fail."""

from __future__ import annotations

import copy
from typing import Any

from services.platform import topics
from tests.deploy import consistency
from tests.deploy.conftest import REPO
from tests.deploy.manifests import secret_references
from tests.deploy.objects import config_map_data, find
from tests.deploy.tools import Manifest

README = (REPO / "README.md").read_text()


def test_consumers_are_read_from_the_code() -> None:
    assert consistency.consumer_modules(REPO) >= {
        "services.identity",
        "services.profile",
        "services.segmentation",
        "services.recommendation",
        "services.wallet",
    }


def test_every_variable_is_a_real_setting_with_matching_ports(
    objects: list[Manifest], image: str
) -> None:
    assert consistency.settings_problems(objects, image) == []


def test_kafka_consumers_scale_within_the_partition_count(
    objects: list[Manifest], image: str
) -> None:
    assert consistency.autoscaler_problems(objects, image, consistency.consumer_modules(REPO)) == []


def test_the_topic_job_creates_the_topics_of_the_code(objects: list[Manifest], image: str) -> None:
    assert consistency.topic_problems(objects, image) == []


def test_kafka_quorum_and_replication_fit_the_nodes(objects: list[Manifest], image: str) -> None:
    assert consistency.kafka_problems(objects, image) == []


def test_services_connect_to_the_whole_replica_set(objects: list[Manifest], image: str) -> None:
    assert consistency.mongo_problems(objects, image) == []


def test_the_readme_creates_every_secret_with_its_keys(objects: list[Manifest]) -> None:
    references = secret_references(objects)
    assert set(references) == {
        "lodestar-pii",
        "lodestar-grpc",
        "lodestar-metrics",
        "lodestar-gateway",
        "lodestar-gateway-tls",
        "lodestar-passkit-tls",
        "lodestar-wallet-apple",
        "lodestar-wallet-apns",
        "lodestar-wallet-google",
    }
    assert references["lodestar-pii"] == {"keys", "active-key-id", "index-key"}
    assert references["lodestar-grpc"] == {"token"}
    assert references["lodestar-metrics"] == {"token"}
    assert consistency.secret_doc_problems(references, README) == []


# --- each check fails on a broken input ---------------------------------------------------


def config_map(objects: list[Manifest], prefix: str) -> dict[str, Any]:
    """The data of the generated ConfigMap whose name starts with ``prefix-`` (kustomize
    appends a content hash)."""
    for obj in objects:
        name = str(obj["metadata"]["name"])
        if obj["kind"] == "ConfigMap" and name.rsplit("-", 1)[0] == prefix:
            data = config_map_data(objects, name)
            assert data is not None
            return data
    raise AssertionError(f"no ConfigMap {prefix}-<hash>")


def workload(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """A rendered workload that must exist."""
    found = find(objects, kind, name)
    assert found is not None
    return found


def test_a_misspelt_or_missing_setting_is_caught(objects: list[Manifest], image: str) -> None:
    config_map(objects, "identity-config")["LODESTAR_IDENTITY_PHONE_REGION"] = "US"
    gateway = workload(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    container["env"] = [v for v in container["env"] if v["name"] != "LODESTAR_WRITE_KEY"]
    assert sorted(consistency.settings_problems(objects, image)) == [
        "Deployment/gateway (gateway): required LODESTAR_WRITE_KEY is not set",
        "Deployment/identity (services.identity): LODESTAR_IDENTITY_PHONE_REGION is not a "
        "setting of services.identity",
    ]


def test_a_port_setting_the_container_does_not_declare_is_caught(
    objects: list[Manifest], image: str
) -> None:
    config_map(objects, "profile-config")["LODESTAR_PROFILE_GRPC_PORT"] = "50062"
    config_map(objects, "wallet-config")["LODESTAR_METRICS_PORT"] = "9100"
    assert sorted(consistency.settings_problems(objects, image)) == [
        "Deployment/profile (services.profile): LODESTAR_PROFILE_GRPC_PORT=50062 but container "
        "port 'grpc' is 50052",
        "Deployment/wallet (services.wallet): LODESTAR_METRICS_PORT=9100 but container port "
        "'metrics' is 9105",
    ]


def test_an_autoscaler_beyond_the_partitions_is_caught(objects: list[Manifest], image: str) -> None:
    consumers = consistency.consumer_modules(REPO)
    workload(objects, "HorizontalPodAutoscaler", "identity")["spec"]["maxReplicas"] = 12
    assert consistency.autoscaler_problems(objects, image, consumers) == [
        "HorizontalPodAutoscaler/identity: maxReplicas 12 > 6 partitions"
    ]
    config_map(objects, "lodestar-common")[consistency.PARTITIONS] = "12"
    assert consistency.autoscaler_problems(objects, image, consumers) == []


def test_a_consumer_without_autoscaler_or_with_fixed_replicas_is_caught(
    objects: list[Manifest], image: str
) -> None:
    objects.remove(workload(objects, "HorizontalPodAutoscaler", "profile"))
    workload(objects, "Deployment", "gateway")["spec"]["replicas"] = 3
    objects.remove(workload(objects, "HorizontalPodAutoscaler", "wallet"))
    consumers = consistency.consumer_modules(REPO)
    assert sorted(consistency.autoscaler_problems(objects, image, consumers)) == [
        "Deployment/gateway: sets replicas although HorizontalPodAutoscaler/gateway owns the count",
        "Deployment/profile: Kafka consumer without an autoscaler",
        "Deployment/wallet: Kafka consumer without an autoscaler",
    ]


def test_topic_list_drift_is_caught(objects: list[Manifest], image: str) -> None:
    data = config_map(objects, "kafka-topics")
    data["topics.txt"] = data["topics.txt"].replace(topics.DEADLETTER, "lodestar.dead.v1")
    data["topics.txt"] = data["topics.txt"].replace(f"{topics.EVENTS_RESOLVED} events", "x -")
    problems = consistency.topic_problems(objects, image)
    assert len(problems) == 2
    assert "lodestar.dead.v1" in problems[0]
    assert topics.DEADLETTER in problems[0]
    assert "event topics ['lodestar.events.raw.v1']" in problems[1]


def test_a_topic_job_with_other_partitions_is_caught(objects: list[Manifest], image: str) -> None:
    job = workload(objects, "Job", "kafka-create-topics")["spec"]["template"]["spec"]
    job["containers"][0]["env"][0] = {"name": consistency.PARTITIONS, "value": "3"}
    assert consistency.topic_problems(objects, image) == [
        f"Job/kafka-create-topics: {consistency.PARTITIONS}=3 but services use {{'6'}}"
    ]


def test_a_quorum_missing_a_node_is_caught(objects: list[Manifest], image: str) -> None:
    kafka = workload(objects, "StatefulSet", "kafka")
    kafka["spec"]["replicas"] += 1
    problems = consistency.kafka_problems(objects, image)
    assert problems[0].startswith("StatefulSet/kafka: quorum voters")
    assert "kafka-1.kafka-headless:9093" in problems[0]


def test_three_nodes_without_three_copies_is_caught(
    rendered: dict[str, list[Manifest]], image: str
) -> None:
    objects = copy.deepcopy(rendered["prod"])
    config_map(objects, "kafka-config")["KAFKA_DEFAULT_REPLICATION_FACTOR"] = "2"
    assert consistency.kafka_problems(objects, image) == [
        "StatefulSet/kafka: 3 nodes but replication 2, min ISR 2",
        "StatefulSet/kafka: min.insync.replicas 2 leaves no broker to lose",
    ]


def test_replication_beyond_the_nodes_is_caught(objects: list[Manifest], image: str) -> None:
    config_map(objects, "kafka-config")["KAFKA_DEFAULT_REPLICATION_FACTOR"] = "5"
    config_map(objects, "lodestar-common")[consistency.REPLICATION] = "5"
    problems = consistency.kafka_problems(objects, image)
    assert problems[0].startswith("StatefulSet/kafka: replication factor above the")
    assert sum(f"{consistency.REPLICATION}=5 >" in p for p in problems) == 6  # every process


def test_a_bootstrap_address_off_kafka_is_caught(objects: list[Manifest], image: str) -> None:
    config_map(objects, "lodestar-common")["LODESTAR_KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9093"
    problems = consistency.kafka_problems(objects, image)
    assert len(problems) == 6
    assert all(p.endswith("bootstrap 'kafka:9093' is no Service port of Kafka") for p in problems)


def test_a_uri_without_the_replica_set_or_a_member_is_caught(
    objects: list[Manifest], image: str
) -> None:
    config_map(objects, "lodestar-mongo")["LODESTAR_MONGO_URI"] = "mongodb://mongo-0.mongo:27017"
    problems = consistency.mongo_problems(objects, image)
    assert len(problems) == 12  # five services and the gateway, each: no replicaSet, wrong hosts
    assert "LODESTAR_MONGO_URI replicaSet=None, mongod runs rs0" in problems[0]


def test_an_init_job_for_other_members_is_caught(objects: list[Manifest], image: str) -> None:
    config_map(objects, "mongo-config")["MONGO_MEMBERS"] = "mongo-0.mongo-headless:27017,x:1"
    problems = consistency.mongo_problems(objects, image)
    assert len(problems) == 1
    assert problems[0].startswith("Job/mongo-init-replica-set: initiates rs0 with")


def test_an_undocumented_secret_or_key_is_caught() -> None:
    references = {"lodestar-pii": {"keys", "pepper"}, "lodestar-apns": set[str]()}
    assert consistency.secret_doc_problems(references, README) == [
        "Secret lodestar-apns has no 'kubectl create secret' command in the README",
        "Secret lodestar-pii: the README's command does not set key pepper",
    ]
