# Shared by ensure.sh and stop.sh (sourced, not run). Expects $here = this directory.
root=$(cd "$here/../.." && pwd)
port=${JIAYI_KAFKA_PORT:-59092}
cport=${JIAYI_KAFKA_CONTROLLER_PORT:-59093}
# Inter-broker listener (PLAINTEXT, loopback only, never given to clients).
bport=${JIAYI_KAFKA_BROKER_PORT:-59094}
# Optional SASL_SSL client listener: a port and a PEM keystore (private key + certificate).
sslport=${JIAYI_KAFKA_SSL_PORT:-}
keystore=${JIAYI_KAFKA_SSL_KEYSTORE:-}
dir=${JIAYI_KAFKA_DIR:-$root/var/kafka}
cache=${JIAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jiayi}
heap=${JIAYI_KAFKA_HEAP:-1g}
start_timeout=${JIAYI_KAFKA_START_TIMEOUT:-90}
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs=$cache/kafka-$kafka_version/libs
pidfile=$dir/kafka.pid
marker=$dir/started-by-ensure
# The SCRAM-SHA-512 user every client-side tool administers the broker as (a super user), and the
# file (mode 600) holding its password, generated once for this data dir.
admin_user=jiayi-admin
admin_password_file=$dir/admin.password
# Written after the storage was formatted with the admin's SCRAM credential. A data dir without
# it was formatted by the older, unauthenticated script.
auth_marker=$dir/auth-formatted

log() { echo "[kafka] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A Kafka broker serves requests on 127.0.0.1:$1: sends ApiVersions v0 (api key 18, correlation
# id 7, client id "jiayi") and expects a response with correlation id 7 and error code 0.
kafka_answers() {
  local out
  out=$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x07\x00\x05jiayi" >&3
    head -c 10 <&3 | od -An -tx1' _ "$1" 2>/dev/null) || return 1
  # shellcheck disable=SC2086
  set -- $out
  [ $# -eq 10 ] && [ "$5$6$7$8$9${10}" = "000000070000" ]
}

# Process $1 exists and is not a zombie (kill -0 also succeeds on an unreaped zombie).
alive() {
  local st
  st=$(sed -n 's/^[0-9]* (.*) \(.\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -n "$st" ] && [ "$st" != Z ]
}

# Pid of the broker started from $dir, if it is alive (checks the command line, not just the pid,
# so a stale pid file whose number was reused does not count).
broker_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $dir/server.properties" ||
    return 1
  echo "$pid"
}

need_java() {
  if ! command -v "$JAVA" >/dev/null || ! command -v "$MVN" >/dev/null; then
    [ "$(id -u)" = 0 ] || die "needs java (17+) and mvn on PATH"
    log "java or mvn missing: installing Debian packages openjdk-17-jre-headless, maven"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq openjdk-17-jre-headless maven >&2
  fi
  local v
  v=$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || die "Kafka $kafka_version needs Java 17+, $JAVA is $v"
}

# Jars of the broker (pom.xml with runtime dependencies) in $libs, fetched once. The cache is
# keyed on pom.xml's hash: a changed pom (other log4j, say) fetches again.
fetch_libs() {
  local want tmp
  want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  [ "$(cat "$libs/.pom-sha256" 2>/dev/null)" = "$want" ] && return 0
  mkdir -p "$(dirname "$libs")"
  (
    # Other clones on this machine share the cache: one fetch at a time.
    flock -w 600 8 || die "cache lock $libs.lock busy"
    [ "$(cat "$libs/.pom-sha256" 2>/dev/null)" = "$want" ] && exit 0
    log "fetching Kafka $kafka_version jars from Maven Central into $libs"
    tmp=$libs.tmp.$$
    rm -rf "$tmp"
    # (Debian's mvn prints bare colour resets even with -B -q: strip them.)
    "$MVN" -B -q -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 |
      sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2 || {
      rm -rf "$tmp"
      die "mvn could not fetch the jars"
    }
    echo "$want" >"$tmp/.pom-sha256"
    rm -rf "$libs"
    mv "$tmp" "$libs"
    log "fetched $(find "$libs" -name '*.jar' | wc -l) jars"
  ) 8>"$libs.lock"
}

# Single node in KRaft mode: this process is both broker and controller. Internal topics get one
# replica, and few partitions so the first consumer group / transaction does not wait on 50.
write_config() {
  local listeners protocols
  listeners="CLIENT://127.0.0.1:$port,INTERNAL://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport"
  protocols="CLIENT:SASL_PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [ -n "$sslport" ]; then
    listeners="$listeners,CLIENTSSL://127.0.0.1:$sslport"
    protocols="$protocols,CLIENTSSL:SASL_SSL"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by infra/kafka/ensure.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=$protocols
log.dirs=$dir/data

# Clients authenticate with SCRAM-SHA-512 (credentials live in the cluster metadata: the admin's
# is bootstrapped at format time, the others are made through the admin API). The internal and
# controller listeners are loopback-only PLAINTEXT: their principal, User:ANONYMOUS, is the
# broker talking to itself, hence a super user; no client is ever given those ports.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.clientssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS;User:$admin_user
EOF
  if [ -n "$sslport" ]; then
    cat >>"$dir/server.properties" <<EOF
listener.name.clientssl.ssl.keystore.type=PEM
listener.name.clientssl.ssl.keystore.location=$keystore
EOF
  fi
  cat >>"$dir/server.properties" <<EOF

num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
EOF
}

show_log_tail() {
  local f
  for f in "$dir/logs/kafka.out" "$dir/logs/server.log"; do
    [ -s "$f" ] || continue
    echo "--- $f" >&2
    tail -n 40 "$f" >&2
  done
}
