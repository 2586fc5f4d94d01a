# webrefinery: `make run` (the refinedweb pipeline, embedded in-process runner) and `make test`.
# Both create .venv and install what they need. CPU torch is pinned here (a plain `torch` pulls CUDA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(abspath ../shared/data)
OUT ?= out
PIPELINE ?= refinedweb
LIMIT ?=
# Local shared archives when present; otherwise `refinery run` streams Common Crawl over https.
INPUT ?= $(if $(wildcard $(DATA)/warc/*.warc.gz),$(DATA)/warc/*.warc.gz,)
RUN_ARGS ?=

FUZZ_SECONDS ?= 300
FUZZ_CORPUS ?= fuzz-corpus

.PHONY: run test install install-dev bench fuzz clean

$(BIN)/.installed: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q -e '.[train]'
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[train,dev,gcp]'
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

run: $(BIN)/.installed
	WEBREFINERY_DATA=$(DATA) $(BIN)/refinery run $(PIPELINE) $(if $(strip $(INPUT)),--input $(INPUT),) --output $(OUT) $(if $(LIMIT),--limit $(LIMIT),) $(RUN_ARGS)

test: $(BIN)/.installed-dev
	WEBREFINERY_DATA=$(DATA) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(BIN)/.installed-dev
	@for b in bench/bench_*.py; do echo "== $$b"; WEBREFINERY_DATA=$(DATA) $(BIN)/python $$b || exit 1; done

fuzz: $(BIN)/.installed-dev
	mkdir -p $(FUZZ_CORPUS)/warc $(FUZZ_CORPUS)/stages
	WEBREFINERY_DATA=$(DATA) $(BIN)/python fuzz/fuzz_warc.py -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096 -artifact_prefix=$(FUZZ_CORPUS)/ $(FUZZ_CORPUS)/warc
	WEBREFINERY_DATA=$(DATA) $(BIN)/python fuzz/fuzz_stages.py -max_total_time=$(FUZZ_SECONDS) -timeout=60 -rss_limit_mb=4096 -artifact_prefix=$(FUZZ_CORPUS)/ $(FUZZ_CORPUS)/stages

clean:
	rm -rf $(OUT) .pytest_cache
