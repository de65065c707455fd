# The two commands a new machine needs: `make run` and `make test`.
# Each does its own set-up, idempotently: the venv is (re)built only when
# pyproject.toml changes, so a second run starts at once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.convscope-installed
MODELS ?= models
HOST ?= 127.0.0.1
PORT ?= 8000

NODE ?= node
# The explorer's module tests (node's built-in runner), one *.test.mjs per module of
# service/static/, in the mirrored tree tests/service/static/.
JS_TESTS := tests/service/static

.PHONY: setup run export lint test test-fast test-js test-containers bench bench-peers clean

setup: $(STAMP)

# torch first, with exact pins and plain pip: pip takes these builds from local disk,
# while a loose pin (or uv/poetry) would download gigabytes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --disable-pip-version-check -e '.[serve,export,dev]'
	touch $(STAMP)

# Export the default model (tinyvgg on scikit-learn's digits) unless the repository
# already holds one, then serve every model in it.
run: $(STAMP)
	@if ! ls $(MODELS)/*/*/metadata.json >/dev/null 2>&1; then \
		echo "No model in $(MODELS)/: training and exporting the default one"; \
		$(BIN)/python -m model_export --out $(MODELS) || exit $$?; \
	fi
	CONVSCOPE_MODEL_REPOSITORY=$(MODELS) $(BIN)/python -m service --host $(HOST) --port $(PORT)

export: $(STAMP)
	$(BIN)/python -m model_export --out $(MODELS) $(ARGS)

# ruff for faults and import order; mypy, strict for service/ (pyproject.toml [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Lint, the explorer's module tests, then every Python test. The slow tier (Fashion-MNIST,
# AlexNet at 224) runs inside the same pytest call and skips itself, saying why, when its data
# is absent. pytest's exit 5 (no test collected) is a failure, never a pass.
test: lint test-js
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP) test-js
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# No node is a failure, not a skip: .ci/run installs Debian's nodejs where it is missing.
# The files are named one by one: how node finds test files in a folder changed across versions.
test-js:
	@command -v $(NODE) >/dev/null 2>&1 || { echo "make test: no '$(NODE)' on PATH: the explorer's module tests" \
		"($(JS_TESTS)) need Node.js 18 or later (apt-get install nodejs)" >&2; exit 1; }
	@files=$$(find $(JS_TESTS) -name '*.test.mjs' | sort); \
	if [ -z "$$files" ]; then echo "make test: no *.test.mjs under $(JS_TESTS)" >&2; exit 1; fi; \
	$(NODE) --test $$files

# Builds the images and runs the compose stack (podman here, Docker where an engine
# exists); needs only the host's python3, not the venv.
test-containers:
	bash docker/test-containers.sh

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

# Issue 23: convscope and the peers (TorchServe, LitServe, PyTriton, BentoML) on the same
# ONNX models, one run (benchmarks/peers/README.md; their venvs: setup_venvs.sh, once).
bench-peers: $(STAMP)
	bash benchmarks/peers/same_run.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
