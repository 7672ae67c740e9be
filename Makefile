# `make run`: set up .venv and generate with the embedded default, mini (no weight downloads).
# `make test`: set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch (on this project's machines the wheel is on local disk); override for CUDA.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,train,demo,serve,eval
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup run test lint clean mini

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

run: setup
	$(VENV)/bin/anygen generate "draw a red circle and show a video of a red circle moving right and play a low steady tone" --seed 0 --out out/ --overwrite

test: setup
	$(PY) -m pytest -q

# Train `mini` from an empty folder (about 40 min on a 2-core CPU; steps are cached in runs/mini) and copy the
# result into the package: weights/mini and pipelines/mini.yaml.
mini: setup
	$(VENV)/bin/anygen world train-mini --out runs/mini --export

lint: setup
	$(VENV)/bin/ruff check anygen tests benchmarks demo

clean:
	rm -rf $(VENV) out runs build *.egg-info
