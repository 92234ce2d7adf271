# fss-sam2 — the two commands: `make demo` and `make test`. Both create .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
# CPU machines take the local CPU build; GPU users: `make TORCH="torch==2.5.1" ...` or conda (environment.yml)
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.fss-sam2-installed
BUILD ?= build
LAB_PORT ?= 8888
# jupyter refuses to run as root without --allow-root; as root (containers) no browser is opened either
LAB_ROOT_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root --no-browser)

.PHONY: demo full test lab install clean standins

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH)"
	# sam2 from its sdist without its deps or build isolation (they would pull a CUDA torch)
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	$(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	# Meta's DINOv2 code (CC-BY-NC), test-only reference for our DINOv2 parity test; its pins
	# (torch 2.0, xformers, cuml) are not needed for building the models, hence --no-deps
	$(BIN)/python -m pip install -q --no-deps dinov2==0.0.1.dev2
	touch $@

# The same toy numbers on every x86-64 machine: PyTorch picks its CPU kernels (ATen, oneDNN) by
# the CPU's instruction set and splits reductions by thread count, and both change the float
# rounding (measured: AVX512 vs AVX2 kernels, 1 vs 2 threads each give other logits). The demo
# pins one code path and two threads; docs/toy_world.md, "Reproducible toy numbers".
PINNED := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 OMP_NUM_THREADS=2

# the synthetic world, the colour baseline, then every notebook on the toy profile (build/notebooks,
# timings.json there); the toy SAM 2 and DINOv2 stand-ins are shipped (fss_sam2/resources/standins),
# copied to build/cache (another world's are pretrained on its first run and cached there)
define TOY_INPUTS
	$(PINNED) $(BIN)/fss-sam2 data toy --out $(BUILD)/toy --seed 0 --quiet
	$(PINNED) $(BIN)/fss-sam2 baseline --dataset toy --root $(BUILD)/toy --episodes 1000 --out $(BUILD)/results/baseline --quiet
endef

demo: $(STAMP)
	$(TOY_INPUTS)
	$(PINNED) $(BIN)/fss-sam2 reproduce --profile toy --out $(BUILD)

# the toy's full tables: every fold, 1- and 5-shot, three training seeds on fold 0 (35 min from
# nothing on 2 cores; reuses what `make demo` trained and evaluated), then the notebooks again
full: $(STAMP)
	$(TOY_INPUTS)
	$(PINNED) $(BIN)/fss-sam2 reproduce --profile toy --full --out $(BUILD)

# regenerate the shipped SAM 2 and DINOv2 stand-ins from the code and seed (fss_sam2/toy/shipped.py;
# its `--check` is in the tests): after a change to a recipe, the world's meta files or the version
standins: $(STAMP)
	$(PINNED) $(BIN)/python -m fss_sam2.toy.standins

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the tutorial in JupyterLab (from the `notebooks` extra), served on this machine only; jupyter
# prints the URL to open, with its token (the next free port if $(LAB_PORT) is taken)
lab: $(STAMP)
	@echo "make lab: JupyterLab on http://127.0.0.1:$(LAB_PORT)/lab, serving notebooks/; open the URL with ?token= printed below (Ctrl+C stops it)"
	$(BIN)/jupyter lab notebooks/ --ip=127.0.0.1 --port=$(LAB_PORT) $(LAB_ROOT_FLAGS)

clean:
	rm -rf $(BUILD) $(VENV)
