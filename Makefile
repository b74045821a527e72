# deployctl: the two commands are `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DEPLOYCTL_LOG_LEVEL ?= error

.PHONY: test test-stress demo bench figures clean deps system-deps controlplane gitea kafka lint typecheck unit integration

## test: install everything, build or reuse the control plane, lint, type-check, run all tests
test: deps system-deps controlplane gitea kafka lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

## unit: the fast pure-logic tests only
unit: deps
	$(BIN)/pytest -q tests/unit

## integration: the tests against the real control plane, git, SQLite, PostgreSQL and registry
integration: deps system-deps controlplane gitea kafka
	$(BIN)/pytest -q -m integration

## test-stress: the integration tests 3 times in a row beside one busy loop per core, then the failures per
## test (goal: 0). A shorter run: make test-stress STRESS_ARGS="--rounds 1 tests/integration/test_watch.py"
test-stress: deps system-deps controlplane gitea kafka
	$(BIN)/python .ci/stress.py $(STRESS_ARGS)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps: $(BIN)/.installed

system-deps:
	bash .ci/system-deps.sh

## controlplane: build kube-apiserver, controller-manager, scheduler, etcd and kwok from Go modules (cached)
controlplane: deps
	@if command -v go >/dev/null || $(BIN)/python -c 'import sys; from deployctl.devtools.localcluster import build; sys.exit(not build.binaries().complete())'; then \
	  $(BIN)/deployctl --log-level info localcluster build; \
	else \
	  echo "make: no Go toolchain: the tests that need the local control plane will be skipped (install Go >= 1.25 to run them)"; \
	fi

## gitea: build Gitea v1.26.0 from Go modules for the forge-approval tests (cached in ~/.cache/deployctl/gitea)
gitea: deps
	@if command -v go >/dev/null; then \
	  DEPLOYCTL_LOG_LEVEL=info $(BIN)/python -m deployctl.devtools.gitea.build; \
	else \
	  echo "make: no Go toolchain: the forge-approval tests against a real Gitea will be skipped"; \
	fi

## kafka: fetch the Apache Kafka broker jars the integration tests run (Maven Central, cached)
kafka: system-deps
	@bash .ci/kafka/fetch.sh >/dev/null

lint: deps
	$(BIN)/ruff check deployctl tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m deployctl.devtools.floorplan

typecheck: deps
	$(BIN)/mypy

## demo: a local control plane, the example environments/ reconciled, an update rolled out, one deploy verified and
## one failing verification held back from production (a real Prometheus), status, then the dashboard until Ctrl-C
## (make demo DEMO_ARGS=--no-ui, or CI=true, skips it)
demo: deps system-deps controlplane
	$(BIN)/python -m deployctl.devtools.demo $(DEMO_ARGS)

## bench: every benchmark, printing its figures
bench: deps system-deps controlplane
	$(BIN)/python bench/figures.py --print $(FIGURES_ARGS)

## figures: rerun the benchmarks and rewrite the README's figures block (date, command, output)
##          (make figures FIGURES_ARGS="--only audit ui" reruns some)
figures: deps system-deps controlplane kafka
	$(BIN)/python bench/figures.py $(FIGURES_ARGS)

clean:
	-$(BIN)/deployctl localcluster down --dir .demo/cluster 2>/dev/null
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out *.egg-info
