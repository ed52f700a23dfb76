# reportqa — two commands from nothing: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CORPUS ?= corpus
INDEX ?= index
SCIFACT ?= ../shared/datasets/scifact
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: serve test install install-test system-test-deps index eval eval-url calibrate scifact bench bench-scale lint compose-check clean

## serve: create .venv, install, build the index from corpus/ if there is none (or it is stale), serve on HOST:PORT
serve: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	REPORTQA_INDEX_DIR=$(INDEX) HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m service

## test: install what the tests need (Python packages, Debian's chromium) and run the whole suite
test: install-test system-test-deps
	$(BIN)/ruff check indexer service eval tests
	$(BIN)/python -m pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from requirements/torch.txt: the CPU build kept on this machine (see DEVELOPERS.md)
$(VENV)/.installed: pyproject.toml requirements/torch.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/torch.txt
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## system-test-deps: Debian's chromium and chromium-driver (browser tests), docker-compose (compose file check)
system-test-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v docker-compose >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver docker-compose >/dev/null; \
	fi
	@/usr/bin/chromium --version

## index: (re)build the index from corpus/
index: install
	$(BIN)/python -m indexer build --corpus $(CORPUS) --out $(INDEX)

## eval: the report question set, test split, every mode, in-process (writes eval/reports/)
eval: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval run --dataset report --split test --index $(INDEX)

## eval-url: the same through a running service's public API (URL=http://127.0.0.1:8000)
eval-url: install
	$(BIN)/python -m eval run --dataset report --split test --url $(or $(URL),http://$(HOST):$(PORT)) --modes lexical,dense,hybrid,ask

## calibrate: refit /v1/ask's abstention on the dev split (after changing chunking or ranking)
calibrate: install
	$(BIN)/python -m eval calibrate --split dev --index $(INDEX)

## scifact: reproduce the published SciFact numbers, then our pipeline (tens of minutes on 2 cores: it embeds
## every sentence of 5,183 abstracts once; indexes are cached under .cache/eval). Fusion tuned on train only.
SCIFACT_ALPHA ?= 0.6
SCIFACT_SENTENCE_WEIGHT ?= 0.25
scifact: install
	$(BIN)/python -m eval reproduce --dataset $(SCIFACT) --split test
	$(BIN)/python -m eval tune --dataset $(SCIFACT) --split train --metric ndcg@10
	$(BIN)/python -m eval run --dataset $(SCIFACT) --split test --modes lexical,dense --sentence-weight 0 --no-report
	$(BIN)/python -m eval run --dataset $(SCIFACT) --split test --modes dense,hybrid \
		--alpha $(SCIFACT_ALPHA) --sentence-weight $(SCIFACT_SENTENCE_WEIGHT)

## bench: index build seconds, search and ask latency percentiles, memory (prints figures)
bench: install
	$(BIN)/python -m eval bench --corpus $(CORPUS)

## bench-scale: synthetic corpus of SIZE chunks (SciFact sentences, vectors from their real embeddings), built from
## vectors, loaded in a fresh process: build/load seconds, RSS, hybrid p50/p99 (filtered too), recall vs exact.
## SIZE=100000 takes a few minutes; SIZE=1000000 needs ~10 GB of RAM and about half an hour (not in make test).
SIZE ?= 100000
bench-scale: install
	$(BIN)/python -m eval.bench_scale --size $(SIZE) --scifact $(SCIFACT)

lint: install-test
	$(BIN)/ruff check indexer service eval tests

## compose-check: validate docker-compose.yml (needs Debian's docker-compose)
compose-check:
	docker-compose -f docker-compose.yml config -q

clean:
	rm -rf $(VENV) $(INDEX) .cache .pytest_cache test-output
