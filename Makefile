# sdrt developer entry points. Each target creates .venv when it is missing.
#   make demo   set up, then generate an image with the bundled toy model (demo.png) and show `sdrt info`
#   make test   set up, then run the test suite (what CI runs)
#   make bench  set up, then run the CPU benchmarks and record them in bench/results/

PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch that these machines carry locally; set TORCH= to keep an installed torch.
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.sdrt-installed
SOURCES := pyproject.toml CMakeLists.txt $(wildcard csrc/* kernels/*/*)

.PHONY: setup demo test test-all bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall (incremental CMake build in build/) whenever the build inputs change.
$(STAMP): $(PY) $(SOURCES)
	@if [ -n "$(TORCH)" ]; then $(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"; fi
	$(PIP) install -e ".[test,onnx,openvino,server,control]"
	# spandrel: the reference the upscaler tests compare against. --no-deps: its torchvision
	# requirement would pull a CUDA torch; the tests load its arch files without torchvision.
	$(PIP) install --no-deps "spandrel==0.4.2"
	@touch $(STAMP)

setup: $(STAMP)

DEMO_PROMPT ?= a large blue circle in the top left on a white background

demo: setup
	$(VENV)/bin/sdrt info
	$(VENV)/bin/sdrt txt2img "$(DEMO_PROMPT)" --seed 1 --cfg-scale 5 -o demo.png

test: setup
	$(PY) -m pytest -q --durations=15

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) bench/bench_step_kernels.py
	$(PY) -m sdrt.toy.acceptance --out bench/results/toy_acceptance.json

clean:
	rm -rf build $(VENV)
