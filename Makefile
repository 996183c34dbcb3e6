# Two commands set everything up: `make demo` and `make test`.
# TORCH picks the PyTorch build: the default is the CPU wheel; on a GPU machine pass the CUDA build,
#   make demo TORCH="torch==2.13.0 --index-url <PyTorch's CUDA wheel index for your CUDA version>"
# bash, for the `time` keyword that times each demo step
SHELL := /bin/bash
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CLI := $(BIN)/maskmatch-med

DEMO_DATA := demo_data/acdc
DEMO_RUN := runs/demo
DEMO_SUPERVISED := runs/demo_supervised
DEMO_TEST := $(shell grep -v '^\#' data_manifests/demo/test.txt)

.PHONY: install demo test clean

install: $(STAMP)

# PyTorch goes in first and on its own, so the project's `torch>=2.8` requirement is already met
# and pip never pulls a multi-GB CUDA build as a side effect.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# Synthetic data -> train MaskMatch -> predict the test patients -> evaluate; then the same for the
# supervised baseline (same recipe, labeled patients and iterations, no unlabeled scans), and both test
# tables side by side: what the unlabeled scans bought. Starts fresh each time.
demo: $(STAMP)
	rm -rf $(DEMO_DATA) $(DEMO_RUN) $(DEMO_SUPERVISED)
	@echo "== 1/8 synthesise 30 phantom patients in the ACDC layout"
	time $(CLI) synth acdc --out $(DEMO_DATA) --patients 30 --seed 0
	@echo "== 2/8 train MaskMatch (recipes/demo.yaml)"
	time $(CLI) train recipes/demo.yaml --output $(DEMO_RUN)
	@echo "== 3/8 predict the test patients with the best validation checkpoint"
	time $(CLI) predict --checkpoint $(DEMO_RUN)/checkpoints/best.pt \
		$(foreach p,$(DEMO_TEST),--input $(DEMO_DATA)/$(p)) --output $(DEMO_RUN)/predictions --png
	@echo "== 4/8 evaluate against the test labels"
	time $(CLI) evaluate --pred $(DEMO_RUN)/predictions --gt $(DEMO_DATA) --output $(DEMO_RUN)/test_report.csv
	@echo "== 5/8 train the supervised baseline: the same recipe without the unlabeled scans"
	time $(CLI) train recipes/demo.yaml --set method.name=supervised --output $(DEMO_SUPERVISED)
	@echo "== 6/8 predict the same test patients with the baseline's best validation checkpoint"
	time $(CLI) predict --checkpoint $(DEMO_SUPERVISED)/checkpoints/best.pt \
		$(foreach p,$(DEMO_TEST),--input $(DEMO_DATA)/$(p)) --output $(DEMO_SUPERVISED)/predictions --png
	@echo "== 7/8 evaluate the baseline against the test labels"
	time $(CLI) evaluate --pred $(DEMO_SUPERVISED)/predictions --gt $(DEMO_DATA) --output $(DEMO_SUPERVISED)/test_report.csv
	@echo "== 8/8 MaskMatch beside the supervised baseline on the test patients"
	$(CLI) compare MaskMatch=$(DEMO_RUN)/test_report.csv supervised=$(DEMO_SUPERVISED)/test_report.csv \
		--output $(DEMO_RUN)/compare.csv

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_data runs .pytest_cache
