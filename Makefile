# Every target sets up .venv itself: on a fresh machine `make demo` and `make test` are all
# a newcomer types. The venv is rebuilt when pyproject.toml changes (stamp keyed by its hash).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# webdataset 0.2.86: the last release stock open_clip's training reader works with
# (docs/reference.md#measured-here); kept apart, used only by the interop test's subprocess.
COMPAT_WDS := $(VENV)/compat/webdataset-0.2.86
# python-dwca-reader: the reference Darwin Core Archive reader our own reader is tested
# against (tests/curate/test_dwca.py), kept apart like webdataset; it has no dependencies.
COMPAT_DWCA := $(VENV)/compat/python-dwca-reader-0.17.1
# megadetector 10.0.28: MegaDetector's own validator and classification smoothing, which
# taxoclip's --detections output is tested against (tests/predict/test_megadetector.py).
# --no-deps: its full requirements pull ultralytics-yolov5, which brings its own torch (and
# does not build here); the validator and smoothing import only these three beyond the venv.
COMPAT_MD := $(VENV)/compat/megadetector
export HF_HOME := $(CURDIR)/.cache/huggingface
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/torchinductor

.PHONY: venv demo test bench bench-scale-curate bench-study lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the pair on this machine's disk, so nothing pulls another build
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps --upgrade --target $(COMPAT_WDS) webdataset==0.2.86
	$(BIN)/pip install -q --no-deps --upgrade --target $(COMPAT_DWCA) python-dwca-reader==0.17.1
	$(BIN)/pip install -q --no-deps --upgrade --target $(COMPAT_MD) megadetector==10.0.28 \
	  jsonpickle==4.1.4 humanfriendly==10.0 opencv-python-headless==5.1.0.95
	@rm -f $(VENV)/.installed-*
	@touch $@

# demo_out/ is the demo's own output: each `make demo` starts it afresh.
demo: $(STAMP)
	rm -rf demo_out
	$(BIN)/taxoclip demo --out demo_out

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Results go to docs/benchmarks.md by hand, with the machine; about 15 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python bench/synth_throughput.py
	$(BIN)/python bench/model_throughput.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/predict_vs_pybioclip.py
	$(BIN)/python bench/text_index.py
	$(BIN)/python bench/rollup.py
	$(BIN)/python bench/curate_throughput.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/serve_load.py

# Curation driver memory at 1x, 4x and 16x records (docs/benchmarks.md); ~5 minutes.
SCALE := bench/out/scale-curate
bench-scale-curate: $(STAMP)
	mkdir -p $(SCALE)
	for n in 100:x1 400:x4 1600:x16; do \
	  test -d $(SCALE)/$${n#*:} || $(BIN)/taxoclip synth $(SCALE)/$${n#*:} --species $${n%:*} \
	    --images-per-species 24 --seed 7 --raw-source --image-size 32 -q; done
	$(BIN)/python bench/scale_curate.py $(SCALE)/x1 $(SCALE)/x4 $(SCALE)/x16 \
	  --out $(SCALE)/runs --workers 2

# The default scaling study (2 worlds x 3 seeds x 4 sizes and every baseline): the paper's
# claims table (docs/analyze.md). 1 h 23 min on 2 cores with the stage-2 recipe
# `study sweep` chose (measured 2026-12-08, docs/benchmarks.md).
# Not part of `make bench`.
bench-study: $(STAMP)
	rm -rf bench/out/study
	$(BIN)/python bench/study_claims.py --out bench/out/study

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) .cache demo_out bench/out
