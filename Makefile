# The two commands of the README: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: install run run-examples test test-fast bench bench-training clean

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build. Anything that pulls torch later finds it satisfied.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,dev]'
	# KServe's client, for the Open Inference Protocol tests: its own pins (protobuf<7, pandas<3) would downgrade
	# what Fermion uses, so it comes without them; the dev extra holds what `from kserve import ...` needs.
	$(PY) -m pip install --quiet --no-deps 'kserve==0.21.0'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start the platform (`fermion up` on port 8080) with three demo deployments: echo, MiniLM embeddings and a trained iris model.
run: install
	HF_HUB_OFFLINE=1 $(PY) examples/platform_demo.py

## Serve each example on its own (echo, streaming, upload, MiniLM embeddings) on ports 8000-8003.
run-examples: install
	HF_HUB_OFFLINE=1 $(PY) examples/run_all.py

## The whole test suite. pytest's exit code 5 ("no tests collected") is reported, not treated as a crash.
test: install
	@mkdir -p test-artifacts
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --junitxml=test-artifacts/junit.xml; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; rc=0; fi; exit $$rc

## Only the fast tests (no model loading).
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

## The benchmark suite (benchmarks/README.md): Fermion vs bare ASGI, FastAPI, LitServe, Ray Serve, BentoML.
## BENCH_ARGS=--quick for a few minutes. Results: benchmarks/RESULTS.md and benchmarks/results/.
bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run.py $(BENCH_ARGS)

## The training benchmark (benchmarks/TRAINING.md): Fermion vs FLAML, a default random forest and a default LightGBM.
## FLAML's AutoML pulls in xgboost, so it is installed here rather than by `make test`.
bench-training: install
	$(PY) -m pip install --quiet 'flaml[automl]>=2.1'
	HF_HUB_OFFLINE=1 $(PY) benchmarks/training.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
