# roadseg: every target sets itself up (virtual environment, package) when needed.
#   make train submit                                 the main job: the model that earns a score on
#                                                     this machine (configs/cpu.yaml, ~14 min on 2 CPU
#                                                     cores; configs/unet.yaml with an NVIDIA GPU)
#   make train CONFIG=configs/....yaml [RESUME=1]     train, then tune thresholds on validation
#   make submit [CONFIG=...] [CKPT=...] [DATA=...] [TTA=1] [PREDICT=configs/predict/...] [UPLOAD=1]
#                                                     write submissions/<run>-<dataset>[-tta].csv
#   make selftrain [CONFIG=...] [VALIDATION=1]        self-training on the unlabelled tiles -> runs/<run>-self
#                                                     (VALIDATION=1: on the validation tiles' imagery too -> runs/<run>-selfval;
#                                                     then: make submit CKPT=runs/<run>-self/checkpoints/best.ckpt)
#   make smoke                                        the pipeline end to end in ~2 minutes (a toy model)
#   make reproduce [PROFILE=smoke|cpu|paper]           the paper's results table and figures (cpu: 2 CPU cores, < 3 h)
#   make test | make lint | make data

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# An NVIDIA GPU (nvidia-smi lists one) picks the GPU config and the paper profile.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CONFIG ?= $(if $(HAS_GPU),configs/unet.yaml,configs/cpu.yaml)
RUN := $(basename $(notdir $(CONFIG)))
CKPT ?= runs/$(RUN)/checkpoints/best.ckpt
DATA ?=
RESUME ?=
TTA ?=
PREDICT ?=
PROFILE ?= $(if $(HAS_GPU),paper,smoke)
PLAN ?= configs/plans/paper.yaml
UPLOAD ?=
VALIDATION ?=
SELF := $(RUN)-self$(if $(VALIDATION),val)
PSEUDO := runs/$(RUN)/pseudo$(if $(VALIDATION),-val)
SHARED ?= ../shared/data
KAGGLE_COMPETITION ?= ethz-cil-road-segmentation-2023
STAMP := $(VENV)/.installed
# A PREDICT options file may name its own checkpoints (an ensemble); CKPT=... still wins.
CKPT_ARG := $(if $(and $(PREDICT),$(filter file,$(origin CKPT))),,--ckpt $(CKPT))

.PHONY: help install data train submit selftrain region-demo smoke check-config reproduce test bench gpu-check gpu-wheels lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,onnx,dev]"
	@touch $@

install: $(STAMP)  ## create .venv and install roadseg with its dev tools

data:  ## link ../shared/data into data/, or download the competition with the Kaggle API
	@mkdir -p data
	@if [ -d "$(SHARED)" ]; then \
		for d in "$(SHARED)"/*/; do ln -sfn "$$(cd "$$d" && pwd)" "data/$$(basename "$$d")"; done; \
		echo "linked $$(ls -d "$(SHARED)"/*/ | wc -l) datasets from $(SHARED) into data/:"; ls data; \
	elif [ -f "$$HOME/.kaggle/kaggle.json" ] || [ -n "$$KAGGLE_USERNAME" ]; then \
		$(MAKE) --no-print-directory $(STAMP) && $(BIN)/python -m pip install -q kaggle && \
		$(BIN)/kaggle competitions download -c $(KAGGLE_COMPETITION) -p data/ && \
		mkdir -p data/cil-2022 && unzip -q -o "data/$(KAGGLE_COMPETITION).zip" -d data/cil-2022 && \
		echo "downloaded $(KAGGLE_COMPETITION) into data/cil-2022"; \
	else \
		echo "No data found. Either:"; \
		echo "  - put the datasets in $(SHARED) (or run: make data SHARED=/path/to/datasets), or"; \
		echo "  - get a Kaggle API token (kaggle.com > Settings > API > Create New Token), save it as"; \
		echo "    ~/.kaggle/kaggle.json, join the competition, then: make data KAGGLE_COMPETITION=<slug>"; \
		echo "  - or unpack the competition's zip yourself into data/cil-2022 (training/, test/)."; \
		exit 2; \
	fi

check-config:
	@test -f "$(CONFIG)" || { \
		if [ -f "configs/$(CONFIG)" ]; then echo "make: CONFIG=$(CONFIG): no such file; did you mean CONFIG=configs/$(CONFIG)?" >&2; \
		else echo "make: CONFIG=$(CONFIG): no such config file; configs/ has: $$(ls configs/*.yaml | tr '\n' ' ')" >&2; fi; exit 2; }

train: $(STAMP) check-config  ## train CONFIG (default: cpu.yaml, or unet.yaml with a GPU), tune its thresholds; RESUME=1 continues
	@test -e data/cil-2022 || $(MAKE) --no-print-directory data
	$(BIN)/roadseg fit --config $(CONFIG) $(if $(RESUME),--ckpt_path last)
	$(BIN)/roadseg tune --ckpt runs/$(RUN)/checkpoints/best.ckpt

submit: $(STAMP) $(if $(filter command line environment,$(origin CKPT)),,check-config)  ## predict the test tiles with CKPT (default: CONFIG's best); TTA=1, PREDICT=options.yaml, UPLOAD=1
	$(BIN)/roadseg submit $(CKPT_ARG) $(if $(PREDICT),--config $(PREDICT)) \
		$(if $(DATA),--data $(DATA)) $(if $(TTA),--tta) \
		$(if $(UPLOAD),--upload --competition $(KAGGLE_COMPETITION))

smoke: $(STAMP)  ## the pipeline end to end in ~2 CPU minutes: train configs/quick.yaml (a toy, F1 ~0.5), tune, submit
	@test -e data/cil-2022 || $(MAKE) --no-print-directory data
	$(BIN)/roadseg fit --config configs/quick.yaml $(if $(wildcard runs/quick/checkpoints/last.ckpt),--ckpt_path last)
	$(BIN)/roadseg tune --ckpt runs/quick/checkpoints/best.ckpt --quiet
	$(BIN)/roadseg submit --ckpt runs/quick/checkpoints/best.ckpt --quiet

selftrain: $(STAMP) check-config  ## self-training: CONFIG's best model labels the unlabelled tiles (TTA, in context), a student trains on them too: runs/<run>-self (VALIDATION=1: the validation tiles' imagery too, runs/<run>-selfval)
	@test -f "$(CKPT)" || { echo "make: $(CKPT): no teacher yet; train first: make train CONFIG=$(CONFIG)" >&2; exit 2; }
	$(BIN)/roadseg pseudo-label --ckpt $(CKPT) --tta --out $(PSEUDO) $(if $(VALIDATION),--validation)
	$(BIN)/roadseg fit --config $(CONFIG) --data.pseudo_labels $(PSEUDO) \
		$(if $(VALIDATION),--data.pseudo_validation true) \
		--trainer.default_root_dir runs/$(SELF) $(if $(RESUME),--ckpt_path last)
	$(BIN)/roadseg tune --ckpt runs/$(SELF)/checkpoints/best.ckpt

region-demo: $(STAMP)  ## fine-tune the cpu.yaml model (trained first if missing) on the Massachusetts tiles as 1 m scenes with road lines; held-out blocks before/after -> runs/region-demo/scores.json
	@test -f runs/cpu/checkpoints/best.ckpt || $(MAKE) --no-print-directory train CONFIG=configs/cpu.yaml
	$(BIN)/python benchmarks/region_demo.py --tiles $(SHARED)/massachusetts-400

reproduce: $(STAMP)  ## the paper's table and figures into results/PROFILE/, and the README's tables from them (default: PROFILE=paper with a GPU, smoke without)
	@test -e data/cil-2022 || $(MAKE) --no-print-directory data
	$(BIN)/roadseg reproduce $(PLAN) --profile $(PROFILE) --out results/$(PROFILE)
	$(BIN)/roadseg tables README.md

test: $(STAMP)  ## run the test suite (unit tests and end-to-end runs on ../shared/data)
	$(BIN)/python -m pytest

bench: $(STAMP)  ## benchmarks: data pipeline, training vs bare loop, inference, scenes (prints, writes JSON)
	$(BIN)/python benchmarks/bench.py --data $(SHARED)

gpu-check: $(STAMP)  ## on a GPU: environment, network and scene throughput, 2 min of unet.yaml, submit with TTA, compile -> gpu_check/figures.md
	$(BIN)/python benchmarks/gpu_check.py --data $(SHARED) --out gpu_check

gpu-wheels: $(STAMP)  ## wheels a registry-less GPU machine lacks (Python 3.12) -> gpu_wheels/ (see benchmarks/gpu_wheels.sh)
	bash benchmarks/gpu_wheels.sh gpu_wheels

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check roadseg tests benchmarks
	$(BIN)/ruff format --check roadseg tests benchmarks

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix roadseg tests benchmarks
	$(BIN)/ruff format roadseg tests benchmarks

clean:  ## remove runs/ and generated submissions (keeps .venv and data/)
	rm -rf runs submissions/*.csv
