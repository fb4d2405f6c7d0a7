# One entry point for a fresh machine. `make demo` and `make test` install everything they need first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
VENV5   := .venv-bpy5
# blender (Debian: 3.4.1) + xvfb run the add-on's real-window and `blender -b` tests; python3-numpy and
# python3-pip because Debian's Blender uses the system Python (the add-on needs numpy, its installer pip)
APT_PKGS := espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite ffmpeg sox \
            blender xvfb python3-numpy python3-pip
SUDO    := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: install sysdeps demo test test-fast bench bench-gpu data default-model addon clean

install: $(VENV)/.installed $(VENV5)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # pinned first: nothing may pull another torch
	$(BIN)/pip install -q -e ".[data,blender,dev]"
	touch $@

# Blender 5.0 in its own environment (bpy 4.5 and 5.0 cannot share one); the add-on runs the engine
# from the main environment's interpreter, exactly as a user's Blender would.
$(VENV5)/.installed:
	$(PY) -m venv $(VENV5)
	$(VENV5)/bin/pip install -q --upgrade pip
	$(VENV5)/bin/pip install -q "numpy<2" "bpy==5.0.1" pytest
	touch $@

sysdeps:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v festival >/dev/null || ! command -v ffmpeg >/dev/null \
	  || ! command -v blender >/dev/null || ! command -v xvfb-run >/dev/null || ! /usr/bin/python3 -c "import numpy" 2>/dev/null; then \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PKGS); fi

test: install sysdeps
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=15   # loadgroup: one Blender window session, not one per worker

demo: install sysdeps
	$(BIN)/python -m training.demo --out out/demo

# Build the installable Blender extension zip (engine bundled) into dist/.
addon: install
	$(BIN)/python build_addon.py

# Speed/memory benchmarks (not tests): engine (encoder/decoder/end to end), Blender bake/playback,
# and click -> baked in a real Blender window (cold and warm engine; Xvfb).
bench: install sysdeps
	$(BIN)/python -m engine.bench
	$(BIN)/python blender_addon/bench.py
	$(BIN)/python blender_addon/bench.py --window

# The CUDA path end to end on a fresh CUDA machine (issue 14): its own venv with torch==2.13.0 from PyPI
# (PyPI's Linux x86-64 wheel of 2.13.0 is the CUDA build; the check below refuses a CPU build), then
# the engine benchmark on the GPU, capped at 5 minutes.  Writes out/bench_gpu.json.
VENVG := .venv-gpu
bench-gpu:
	$(PY) -m venv $(VENVG)
	$(VENVG)/bin/pip install -q --upgrade pip
	$(VENVG)/bin/pip install -q torch==2.13.0
	$(VENVG)/bin/python -c "import sys, torch; ok = torch.version.cuda and torch.cuda.is_available(); \
	  sys.exit(0 if ok else f'torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA GPU')"
	$(VENVG)/bin/pip install -q -e .
	mkdir -p out
	timeout 300 $(VENVG)/bin/python -m engine.bench --device cuda --json out/bench_gpu.json

# The full SynthTalk corpus and the real-speech evaluation set.
data: install sysdeps
	$(BIN)/python -m training.synthtalk generate --out data/synthtalk --preset full --workers 2
	$(BIN)/python -m training.synthtalk realspeech --out data/realspeech

# Reproduce the shipped default checkpoint: the composite model from scratch (≈ 45 min on 2 CPU cores after
# `make data`), then two short fine-tunes on fitted Whisper windows (eq. 4, then + the lip terms; ≈ 20 min).
default-model: data
	$(BIN)/python -m training.train --config training/configs/synthtalk_default.toml --out runs/synthtalk_default
	$(BIN)/python -m training.subset data/synthtalk runs/fit_data --train-every 4 --val-every 8
	$(BIN)/python -m training.train --config training/configs/synthtalk_fitted.toml --out runs/default_fit --no-eval \
	    data.root=runs/fit_data train.max_steps=400 train.num_threads=1 train.feature_cache=runs/feature_cache_fit \
	    recipe.init_from=runs/synthtalk_default/model.safetensors
	$(BIN)/python -m training.train --config training/configs/synthtalk_fitted.toml --out runs/default_lipfit --no-eval \
	    data.root=runs/fit_data train.max_steps=200 train.seed=3 train.feature_cache=runs/feature_cache_fit \
	    recipe.init_from=runs/default_fit/model.safetensors recipe.lip_gap_weight=20.0 recipe.contact_weight=4.0 \
	    recipe.penetration_weight=20.0
	cp runs/default_lipfit/model.safetensors engine/assets/default.safetensors

clean:
	rm -rf $(VENV) $(VENV5) $(VENVG) out build dist
