#!/bin/sh
# Creates the Lodestar topics that do not exist yet, with the partition count and replication
# factor the services are configured with. Idempotent: existing topics are left as they are
# (raise partitions with kafka-topics.sh --alter; see the README).
set -eu

tool=/opt/kafka/bin/kafka-topics.sh
bootstrap="${KAFKA_BOOTSTRAP_SERVERS:?}"
partitions="${LODESTAR_KAFKA_TOPIC_PARTITIONS:?}"
replication="${LODESTAR_KAFKA_REPLICATION_FACTOR:?}"
retention_ms=$((${LODESTAR_KAFKA_EVENTS_RETENTION_HOURS:?} * 3600 * 1000))

until "$tool" --bootstrap-server "$bootstrap" --list >/dev/null; do
  echo "waiting for Kafka at $bootstrap"
  sleep 5
done

grep -v '^#' /etc/lodestar/topics/topics.txt | while read -r name kind; do
  [ -n "$name" ] || continue
  set -- --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name" \
    --partitions "$partitions" --replication-factor "$replication"
  if [ "$kind" = events ]; then
    set -- "$@" --config "retention.ms=$retention_ms"
  fi
  "$tool" "$@"
done
echo "topics ready"
