# Set-up is part of the two commands a newcomer runs:
#   make demo   - installs into .venv (once) and runs the main job end to end on the phantom dataset
#   make test   - installs into .venv (once), lints with ruff and runs the test suite (what CI runs)
#
# On a machine without an NVIDIA GPU, torch is installed first as TORCH (default torch==2.13.0), so that
# no CUDA wheels are pulled; point TORCH_INDEX_URL at PyTorch's CPU wheel index if your package index
# only has CUDA builds. With a GPU, the `gpu` extra (faiss-gpu) is added.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
comma := ,
EXTRAS := test$(if $(HAS_GPU),$(comma)gpu)
PYTEST_ARGS ?= -q --durations=15

.PHONY: demo test install clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifeq ($(HAS_GPU),)
	$(BIN)/pip install $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH)"
endif
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(BIN)/monai-pso demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
