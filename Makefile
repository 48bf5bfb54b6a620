# The two commands: `make run` (the main job on the embedded default) and `make test`
# (lint, types and the whole suite against real PostgreSQL and Apache Kafka, and the web pages
# in headless Chromium).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest services stop-services demo bench-replay bench-api bench-ingest bench-audit chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/jiayi serve --demo-patients 2000 --seed 7

demo: $(STAMP)
	$(BIN)/jiayi demo --patients $${PATIENTS:-10000} --seed $${SEED:-7}

# Benchmarks print figures and ratios; they are not tests. Each uses the private PostgreSQL.
bench-replay: $(STAMP)
	JIAYI_POSTGRES_URL=$${JIAYI_POSTGRES_URL:-$$(infra/postgres/ensure.sh)} \
	$(BIN)/python bench/replay.py --events $${EVENTS:-1000000} --schema $${SCHEMA:-bench_replay_1m_sealed}

# `jiayi audit verify` over the bench-replay log (1M events), vs a raw read of the same rows.
bench-audit: $(STAMP)
	JIAYI_POSTGRES_URL=$${JIAYI_POSTGRES_URL:-$$(infra/postgres/ensure.sh)} \
	$(BIN)/python bench/audit.py --events $${EVENTS:-1000000} --schema $${SCHEMA:-bench_replay_1m_sealed}

bench-api: $(STAMP)
	JIAYI_POSTGRES_URL=$${JIAYI_POSTGRES_URL:-$$(infra/postgres/ensure.sh)} \
	$(BIN)/python bench/api.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Starts (installing if needed) the real services the tests use and exports their addresses, and
# the Kafka administrator's credentials (jiayi-admin, password from the broker's data dir).
# A broker this command started is stopped again at the end; one already running is left alone.
test: $(STAMP) lint typecheck
	@set -e; \
	JIAYI_TEST_POSTGRES_URL=$${JIAYI_TEST_POSTGRES_URL:-$$(infra/postgres/ensure.sh)}; \
	export JIAYI_TEST_POSTGRES_URL; \
	kafka_dir=$${JIAYI_KAFKA_DIR:-var/kafka}; \
	JIAYI_TEST_KAFKA=$${JIAYI_TEST_KAFKA:-$$(infra/kafka/ensure-auth.sh)}; \
	JIAYI_TEST_KAFKA_USERNAME=$${JIAYI_TEST_KAFKA_USERNAME:-jiayi-admin}; \
	JIAYI_TEST_KAFKA_PASSWORD=$${JIAYI_TEST_KAFKA_PASSWORD:-$$(cat "$$kafka_dir/admin.password" 2>/dev/null || true)}; \
	export JIAYI_TEST_KAFKA JIAYI_TEST_KAFKA_USERNAME JIAYI_TEST_KAFKA_PASSWORD; \
	started=0; [ -f "$$kafka_dir/started-by-ensure" ] && started=1; \
	infra/browser/ensure.sh >/dev/null; \
	status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$started = 1 ]; then infra/kafka/stop.sh >&2 || true; fi; \
	exit $$status

stop-services:
	infra/kafka/stop.sh
	infra/postgres/stop.sh

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

# Partner events -> event store through the consumer, vs kafka-python + COPY (see consumers/README.md).
# Authenticated as the broker's administrator (jiayi-admin of infra/kafka).
bench-ingest: $(STAMP)
	JIAYI_POSTGRES_URL=$${JIAYI_POSTGRES_URL:-$$(infra/postgres/ensure.sh)} \
	JIAYI_KAFKA_BOOTSTRAP=$${JIAYI_KAFKA_BOOTSTRAP:-$$(infra/kafka/ensure-auth.sh)} \
	JIAYI_KAFKA_USERNAME=$${JIAYI_KAFKA_USERNAME:-jiayi-admin} \
	JIAYI_KAFKA_PASSWORD=$${JIAYI_KAFKA_PASSWORD:-$$(cat "$${JIAYI_KAFKA_DIR:-var/kafka}/admin.password")} \
	$(BIN)/python bench/ingest.py --messages $${MESSAGES:-200000} --patients $${PATIENTS:-20000} \
	  --consumers $${CONSUMERS:-2} $(BENCH_ARGS)

# Processes SIGKILLed and PostgreSQL and Kafka restarted under a steady load of API writes and
# partner messages; prints, per fault, events lost and applied twice, 5xx answers and seconds to
# recover. Starts a PostgreSQL (port 55532) and a Kafka broker (59492-59494) of its own under
# var/chaos/ (it restarts them) and stops them at the end. CHAOS_ARGS: see bench/chaos.py --help.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)
