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
EXTERNAL ?= ../shared/datasets/report-external
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: serve test install install-test system-test-deps index eval eval-external eval-url calibrate \
	calibrate-packaged reader query-adapter scifact bench bench-scale overload lint compose-check k8s-check failover-test bench-http \
	worker-memory clean

## serve: create .venv, install, build the index from corpus/ if there is none (or it is stale), export the
## ONNX query encoder (the model with the query adapter merged in) and /v1/ask's reader if they are missing, serve
## on HOST:PORT
serve: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m indexer export-onnx --out $(INDEX) --prune
	$(BIN)/python -m service.ask.reader
	REPORTQA_INDEX_DIR=$(INDEX) HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m service

## test: install what the tests need (Python packages, Debian's chromium) and run the whole suite
test: install-test system-test-deps
	$(BIN)/ruff check indexer service eval tests deploy
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

## system-test-deps: Debian's chromium and chromium-driver (browser tests), docker-compose (compose file check),
## haproxy (the failover drill)
system-test-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v docker-compose >/dev/null \
			|| [ ! -x /usr/sbin/haproxy ]; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver docker-compose haproxy >/dev/null; \
	fi
	@/usr/bin/chromium --version

## index: (re)build the index from corpus/
index: install
	$(BIN)/python -m indexer build --corpus $(CORPUS) --out $(INDEX)

## eval: the report question set, test split, every mode, in-process (writes eval/reports/)
eval: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval run --dataset report --split test --index $(INDEX)

## eval-external: another author's questions (read in place from EXTERNAL): answers, refusals per style, keywords
eval-external: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval run --dataset report-external --external-dir $(EXTERNAL) --index $(INDEX) --modes lexical,dense,hybrid,ask
	$(BIN)/python -m eval run --dataset report-external --split keywords --external-dir $(EXTERNAL) --index $(INDEX) --modes lexical,dense,hybrid

## eval-url: the same through a running service's public API (URL=http://127.0.0.1:8000)
eval-url: install
	$(BIN)/python -m eval run --dataset report --split test --url $(or $(URL),http://$(HOST):$(PORT)) --modes lexical,dense,hybrid,ask

## calibrate: refit /v1/ask's abstention on report dev, report-external and helpers-m, -n (eval/sets.py
## CALIBRATION_SETS), written to $(INDEX)/calibration.json (after changing chunking, ranking or the features);
## calibrate-packaged refits the default shipped in the wheel. The served reader was trained on dev and
## report-external: each is scored by a fold reader trained without it (eval/readers); it never saw m and n.
calibrate: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval calibrate --index $(INDEX) --external-dir $(EXTERNAL)

calibrate-packaged: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval calibrate --index $(INDEX) --external-dir $(EXTERNAL) --write service/ask/calibration.json

## reader: retrain /v1/ask's reader (MiniLM's first three layers with rank-8 adapters, service/ask/reader) on report
## dev, report-external and the twelve helper sets, and the two fold readers calibrate needs, then refit the
## packaged calibration (~50 min)
READER_TRAIN := $(BIN)/python -m eval reader --index $(INDEX) --external-dir $(EXTERNAL) --layers 3 --lora 8 --lr 5e-4 \
	--epochs 3 --neg-per-pos 4 --no-progress
comma := ,
space := $(subst ,, )
# the reader's helper sets (eval/sets.py READER_HELPER_SETS; the query adapter's are HELPER_SETS, a to n)
READER_HELPERS := $(subst $(space),$(comma),$(foreach s,a b c d e f g h i j k l,eval/datasets/helpers-$(s)))
reader: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(READER_TRAIN) --train report:dev,$(READER_HELPERS) --score report-external:all --save eval/readers/without-external
	$(READER_TRAIN) --train report-external:all,$(READER_HELPERS) --score report:dev --save eval/readers/without-dev
	$(READER_TRAIN) --train report:dev,report-external:all,$(READER_HELPERS) --score report:test,report:fresh \
		--save service/ask/reader
	$(MAKE) calibrate-packaged

## query-adapter: retrain the query adapter (indexer/query_adapter: the model fine-tuned on questions only, against
## the index's fixed vectors, with a "no answer" class, on fourteen helper sets), then refit the packaged
## calibration (about 7 min)
query-adapter: install
	$(BIN)/python -m indexer ensure --corpus $(CORPUS) --out $(INDEX)
	$(BIN)/python -m eval query-adapter --index $(INDEX) --external-dir $(EXTERNAL) --rank 88 --storage int8 --no-progress \
		--save indexer/query_adapter
	$(MAKE) calibrate-packaged

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

## overload: the overload curve against a real server on loopback: unloaded and sustainable rate, then 1x/2x/4x
## offered load (accepted vs refused, p99, refusal latency, /healthz p99); a table and JSON lines, about a minute
overload: install
	$(BIN)/python -m eval.overload

## bench-scale: synthetic corpus of SIZE chunks (SciFact sentences, vectors from their real embeddings), built from
## vectors, loaded in a fresh process: build/load seconds, RSS, hybrid p50/p99 (filtered too), recall vs exact.
## SIZE=100000 takes a few minutes; SIZE=1000000 needs ~10 GB of RAM and about half an hour (not in make test).
SIZE ?= 100000
bench-scale: install
	$(BIN)/python -m eval.bench_scale --size $(SIZE) --scifact $(SCIFACT)

lint: install-test
	$(BIN)/ruff check indexer service eval tests deploy

## compose-check: validate docker-compose.yml (needs Debian's docker-compose) and deploy/haproxy.cfg (haproxy -c)
compose-check:
	docker-compose -f docker-compose.yml config -q
	@if [ -x /usr/sbin/haproxy ]; then /usr/sbin/haproxy -c -q -f deploy/haproxy.cfg && echo "deploy/haproxy.cfg: valid"; \
	else echo "haproxy not installed: deploy/haproxy.cfg not checked"; fi

## k8s-check: render deploy/k8s with kubectl kustomize and validate it offline (kubernetes-validate)
k8s-check: install-test
	$(BIN)/python deploy/k8s_check.py

## failover-test: 2 replicas behind Debian's HAProxy on loopback, one killed with SIGKILL under load and
## restarted, a new index version rolled through both; one JSON line, exit 1 on any failed request
failover-test: install system-test-deps
	PYTHONPATH=$(CURDIR) $(BIN)/python deploy/failover_test.py

## bench-http: this service (WORKERS processes) and ../shared/bench/naive_api.py side by side at 1/8/32
## clients, new and repeated queries, SECONDS per step; a table and JSON lines
WORKERS ?= 1
SECONDS ?= 10
bench-http: install
	PYTHONPATH=$(CURDIR) $(BIN)/python deploy/bench_http.py --index $(INDEX) --workers $(WORKERS) --seconds $(SECONDS)

## worker-memory: RSS and PSS of every process with 1, 2 and 3 workers (real model and index)
worker-memory: install
	PYTHONPATH=$(CURDIR) $(BIN)/python deploy/worker_memory.py --index $(INDEX)

clean:
	rm -rf $(VENV) $(INDEX) .cache .pytest_cache test-output
