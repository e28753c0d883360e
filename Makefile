# make run   : install into .venv (when missing), build the ToyWorld default run if none, start the app
# make test  : install into .venv (when missing), install Debian chromium if missing, run the tests
# make bench : print the performance ratios (run on an idle machine)
# make docs  : build the docs site into build/site (mkdocs --strict; `mkdocs serve` to read it live)
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
RUNS    ?= runs
PORT    ?= 8501

.PHONY: run test test-fast bench docs venv chromium clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(VPY) -m pip install -q -r requirements.txt
	@touch $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

run: venv  # the server starts through dissect_studio/__main__.py: imports warmed, a spinner at once
	$(VPY) -m dissect default-run --runs $(RUNS) --features background
	DISSECT_RUNS=$(RUNS) $(VPY) dissect_studio/__main__.py run app.py --server.address 127.0.0.1 \
	  --server.port $(PORT) --browser.gatherUsageStats false --server.headless true

test: venv chromium
	$(VPY) -m pytest -q tests

test-fast: venv
	$(VPY) -m pytest -q -m "not slow and not browser" tests

bench: venv
	$(VPY) benchmarks/run_all.py

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VPY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) .cache
