# The commands people type. Everything installs itself on first use: a fresh machine needs only
# Python 3.11+ and make (and Node.js/npm for `make lint`'s protobuf checks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
UV := $(BIN)/uv
DEPS_STAMP := $(VENV)/.deps-installed
PROTOS_STAMP := gen/python/.generated
PROTO_FILES := $(shell find protos -name '*.proto')
BUF := node_modules/.bin/buf
BREAKING_AGAINST ?= main
# Every process of the stack imports the same modules. They are compiled to bytecode once, at
# install and before each run, not by every process at every start: where PYTHONDONTWRITEBYTECODE
# is set (CI's machines) nothing else writes the cache, and the stack took 36 s to start, not 14.
SOURCE_TREES := bench deploy gateway gen local_supervisor marketplace_platform saga_tasks services simulators tests tools verification workers

.PHONY: help install bytecode protos build run test test-embedded lint fmt bench bench-tracing clean token deploy chaos drill-db drill-zone drill-region

help:
	@echo "make run      start every service locally (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL; REPLICAS=2: two zones)"
	@echo "make test     run the test suite"
	@echo "make lint     ruff, mypy, buf lint, cfn-lint, checkov and buf breaking against $(BREAKING_AGAINST)"
	@echo "make protos   regenerate the Python contracts into gen/python"
	@echo "make build    build wheels (contracts and platform) into dist/"
	@echo "make token    print a development JWT for the gateway (TOKEN_ARGS='--sub ID --scope admin')"
	@echo "make deploy   package and deploy to AWS (DEPLOY_ENV, DEPLOY_REGION; AWS CLI + Docker; not in CI)"
	@echo "make bench    inventory reservations/s (hot SKU vs 1,000 SKUs), cart reads/s (cache vs none), saga start to claim (NOTIFY vs poll), checkout load (docs/benchmarks.md)"
	@echo "make bench-tracing  the checkout benchmark with tracing off and on (jsonl, default ratio) in turns; the on/off ratios"
	@echo "make chaos    2,000 checkouts under retry storms, 20 SIGKILLs, PSP faults, a Redis restart; check every invariant (SEED=N replays)"
	@echo "make drill-db    the database writer SIGKILLed under checkout load, its synchronous standby promoted; nothing acknowledged lost (DRILL_ARGS=--no-standby: the only server restarted)"
	@echo "make drill-zone  every process of one zone of two SIGKILLed and held down under checkout load, then back; every invariant (SEED=N replays)"
	@echo "make drill-region  Region A (stack and database) SIGKILLed under load, its asynchronous Region B promoted and fenced, clients retrying there, stale A back; RTO, RPO, double charges, orphan holds (DRILL_ARGS=--stall-replication 1: B lags)"

install: bytecode

# Fast when nothing changed: compileall skips a module whose cached bytecode is current.
bytecode: $(PROTOS_STAMP)
	$(PY) -m compileall -q -j 0 $(SOURCE_TREES) >/dev/null

$(DEPS_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --compile-bytecode --python $(PY) -e '.[dev]'
	touch $@

$(PROTOS_STAMP): $(DEPS_STAMP) $(PROTO_FILES) tools/gen_protos.py
	$(PY) tools/gen_protos.py generate
	$(UV) pip install -q --compile-bytecode --python $(PY) -e gen/python
	touch $@

protos: $(DEPS_STAMP)
	rm -f $(PROTOS_STAMP)
	$(MAKE) $(PROTOS_STAMP)

build: $(PROTOS_STAMP)
	rm -rf dist
	$(UV) build --wheel --out-dir dist gen/python
	$(UV) build --wheel --out-dir dist .
	@ls -1 dist

# REPLICAS=N runs every service, worker and the gateway once per zone (zone-a, zone-b, ...).
REPLICAS ?= 1
run: bytecode
	$(PY) -m local_supervisor --replicas $(REPLICAS)

test: bytecode
	$(PY) -m pytest

# checkov (IaC scanner) over the hand-written templates and the rendered stacks: any failed
# check fails the build; each suppression sits in the template beside the resource, with its
# reason. One directory per run: checkov 3.3 given two -d missed a failure in the second.
CHECKOV := $(BIN)/checkov --framework cloudformation --compact --quiet --skip-download -d

lint: $(PROTOS_STAMP) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BUF) lint gen/python/image.binpb --config buf.yaml --path marketplace
	node_modules/.bin/asl-validator --json-path deploy/ecs/checkout_saga.asl.json
	$(PY) -m tools.deployer render --out build/cfn && $(BIN)/cfn-lint deploy/ecs/templates/*.yaml build/cfn/*.json
	promtool check rules deploy/prometheus/rules.yml
	$(CHECKOV) deploy/ecs/templates
	$(CHECKOV) build/cfn
	$(PY) tools/buf_breaking.py --buf $(BUF) --against $(BREAKING_AGAINST)

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The checkout load stores 1,000,000 orders too, so the data-growth target (within 10% of
# 10,000) is measured; it ends with its audit of every order it placed, failing on a mismatch.
bench: bytecode
	$(PY) -m bench.inventory_reservations
	$(PY) -m bench.cart_reads
	$(PY) -m bench.saga_wakeup --json build/bench/saga_wakeup.json
	$(PY) -m bench.checkout_load --stored 0,10000,1000000 --json build/bench/checkout.json --plot build/bench/checkout.png

# What tracing costs: two stacks side by side, tracing off and on (jsonl, the default ratio),
# timed in turns for a few rounds; the on/off ratios in its table and JSON (docs/benchmarks.md).
bench-tracing: bytecode
	$(PY) -m bench.checkout_tracing --json build/bench/checkout_tracing.json --plot build/bench/checkout_tracing.png

# The whole stack under a seeded storm of customers and faults; exits non-zero on any invariant
# violation. The seed is printed; SEED=N replays a run's plan.
CHAOS_CHECKOUTS ?= 2000
CHAOS_KILLS ?= 20
chaos: bytecode
	$(PY) -m verification.chaos --checkouts $(CHAOS_CHECKOUTS) --kills $(CHAOS_KILLS) $(if $(SEED),--seed $(SEED))

# Failure-domain drills, each exiting non-zero on a violation (docs/architecture.md, "Failure
# domains"). SEED=N replays a run's plan; DRILL_ARGS passes any other option (--help lists them).
DRILL_ARGS ?=
drill-db: bytecode
	$(PY) -m verification.drill_db $(if $(SEED),--seed $(SEED)) $(DRILL_ARGS)

drill-zone: bytecode
	$(PY) -m verification.drill_zone $(if $(SEED),--seed $(SEED)) $(DRILL_ARGS)

# Region A (stack and database) SIGKILLed under checkout load, Region B (an asynchronous standby)
# promoted and fenced, the clients retrying against it, stale A brought back; exits non-zero on
# any violation. SEED=N replays a run; DRILL_ARGS passes any other option (--short, --checkouts,
# --stall-replication, ...).
drill-region: bytecode
	$(PY) -m verification.drill_region $(if $(SEED),--seed $(SEED)) $(DRILL_ARGS)

# Images to ECR, templates + the saga definition + the adapter Lambdas' zip to S3, then the
# stacks (deploy/ecs/README.md). Needs AWS credentials, the AWS CLI and Docker; CI never runs it.
DEPLOY_ENV ?= staging
DEPLOY_REGION ?= eu-west-1
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD)
deploy: $(PROTOS_STAMP)
	$(PY) -m tools.deployer deploy --env $(DEPLOY_ENV) --region $(DEPLOY_REGION) --image-tag $(IMAGE_TAG)

# A development token signed with GATEWAY_JWT_SECRET (the built-in development secret by default).
TOKEN_ARGS ?= --sub customer-dev --scope admin
token: $(DEPS_STAMP)
	@$(PY) -m gateway.dev_token $(TOKEN_ARGS)

fmt: $(DEPS_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf gen dist build .mypy_cache .ruff_cache .pytest_cache
