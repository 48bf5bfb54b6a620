#!/usr/bin/env bash
# The broker of infra/compose.yaml, run inside the apache/kafka image: writes its config, formats
# the storage on first start with the administrator's SCRAM credential (KRaft can only bootstrap
# SCRAM users at format time) and starts Kafka. Clients connect with SASL_SSL (SCRAM-SHA-512) on
# :9092; the inter-broker and controller listeners are PLAINTEXT on the container's loopback only.
#
# Env: KAFKA_ADMIN_PASSWORD (jiayi-admin's password, required), KAFKA_ADVERTISED_HOST (kafka).
# Certificates are the operator's: /etc/kafka/certs/broker-keystore.pem, a PEM file with the
# broker's unencrypted PKCS#8 private key followed by its certificate chain (for the name the
# clients use, KAFKA_ADVERTISED_HOST); clients trust the CA that signed it (JIAYI_KAFKA_SSL_CAFILE).
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
host=${KAFKA_ADVERTISED_HOST:-kafka}
data=/var/lib/kafka/data
cfg=/var/lib/kafka/server.properties
keystore=/etc/kafka/certs/broker-keystore.pem
[ -r "$keystore" ] || {
  echo "missing $keystore (the broker's key and certificate, PEM)" >&2
  exit 1
}
cat >"$cfg" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
listeners=CLIENT://:9092,CONTROLLER://127.0.0.1:9093,INTERNAL://127.0.0.1:9094
advertised.listeners=CLIENT://$host:9092,CONTROLLER://127.0.0.1:9093,INTERNAL://127.0.0.1:9094
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data

sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.ssl.keystore.type=PEM
listener.name.client.ssl.keystore.location=$keystore
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# ANONYMOUS: the broker itself on its loopback-only PLAINTEXT listeners.
super.users=User:ANONYMOUS;User:jiayi-admin

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
if [ ! -f "$data/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
    -c "$cfg" --standalone \
    --add-scram "SCRAM-SHA-512=[name=jiayi-admin,password=$KAFKA_ADMIN_PASSWORD]" >/dev/null
fi
exec /opt/kafka/bin/kafka-server-start.sh "$cfg"
