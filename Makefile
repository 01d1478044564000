# Set-up is part of the two commands a newcomer runs:
#   make demo   - installs the package (no test extra) into .venv (once) and runs the main job end to end on the phantom dataset
#   make test   - installs the system packages of the integration tests when it can (else says which tests
#                 will be skipped and how to install them), installs the package with its test extra into
#                 .venv (once), lints with ruff and runs the test suite. CI (.ci/run) runs exactly this.
#
# On a machine without an NVIDIA GPU, torch is installed first as TORCH (default torch==2.13.0), so that
# no CUDA wheels are pulled; point TORCH_INDEX_URL at PyTorch's CPU wheel index if your package index
# only has CUDA builds. With a GPU, the `gpu` extra (faiss-gpu) is added.
#
# Each install leaves a stamp in .venv/bin: .installed-demo (the package) and .installed-test (the package
# with the test extra, which also satisfies the demo); editing pyproject.toml reinstalls. Set
# SYSTEM_DEPS=skip to run the tests without the system-package step.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
SYSTEM_DEPS ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
comma := ,
DEMO_EXTRAS := $(if $(HAS_GPU),[gpu])
TEST_EXTRAS := [test$(if $(HAS_GPU),$(comma)gpu)]
# Test files spread over the cores (at most 4 workers; a file's tests stay on one worker, so module fixtures are built once).
PYTEST_ARGS ?= -q --durations=15 -n auto --maxprocesses 4 --dist loadfile

.PHONY: demo test install system-deps clean

# The venv with torch (the CPU build where there is no GPU), then the package with EXTRAS, editable.
define install_package
	$(PYTHON) -m venv $(VENV)
	$(if $(HAS_GPU),,$(BIN)/pip install $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH)")
	$(BIN)/pip install -e ".$(1)"
endef

install: $(BIN)/.installed-test

$(BIN)/.installed-demo: pyproject.toml
	$(call install_package,$(DEMO_EXTRAS))
	touch $@

$(BIN)/.installed-test: pyproject.toml
	$(call install_package,$(TEST_EXTRAS))
	touch $@ $(BIN)/.installed-demo

# Orthanc, dicom3tools (dciodvfy) and Chromium for the PACS, DICOM-validation and report-rendering tests.
system-deps:
ifeq ($(SYSTEM_DEPS),skip)
	@echo "system-deps: skipped (SYSTEM_DEPS=skip)"
else
	@.ci/install-system-deps
endif

demo: $(BIN)/.installed-demo
	$(BIN)/monai-pso demo

test: system-deps $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
