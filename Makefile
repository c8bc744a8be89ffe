# Two entry points for a fresh CPU machine: `make test` and `make demo`.
# Each creates .venv and installs the pinned dependencies on its own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ANCHOR ?= ../shared/data/anchor_cnn_512_25fps.mp4
DEMO_DIR ?= outputs/demo

.PHONY: venv test demo clean

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	@test -f $(ANCHOR) || { echo "demo needs $(ANCHOR) (the shared anchor clip)"; exit 2; }
	$(BIN)/talkgs prepare $(ANCHOR) -o $(DEMO_DIR)/anchor
	$(BIN)/talkgs inspect $(DEMO_DIR)/anchor -o $(DEMO_DIR)/inspect
	@echo "demo: dataset in $(DEMO_DIR)/anchor, preview in $(DEMO_DIR)/inspect"

clean:
	rm -rf $(VENV) outputs .pytest_cache
