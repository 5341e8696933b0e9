# napari-medseg: `make demo` and `make test` set everything up from a fresh checkout.
# The virtual environment lives in .venv/. TORCH_SPEC installs torch first so that pip never
# replaces it with a multi-GB CUDA build (override, e.g. TORCH_SPEC="torch==2.5.1+cu124").

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
XVFB_PKGS := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
	libxcb-render-util0 libxkbcommon-x11-0 libxcb-shape0 libgl1 libegl1 libfontconfig1 libdbus-1-3

.PHONY: demo demo-headless gui xvfb test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(PY) setup.cfg pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.gui: $(VENV)/.core
	$(PIP) install -q "$(TORCH_SPEC)" -e ".[gui]"
	touch $@

$(VENV)/.testing: $(VENV)/.core
	$(PIP) install -q "$(TORCH_SPEC)" -e ".[testing]"
	touch $@

# Opens napari with the MRI sample and the widget when a display is there; otherwise trains
# headless on the sample and writes predictions plus a PNG overlay.
demo: $(VENV)/.core
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
		$(MAKE) --no-print-directory $(VENV)/.gui && \
		( $(VENV)/bin/napari-medseg gui --sample mri || { \
			echo "napari could not open a window: running the headless demo instead"; \
			$(VENV)/bin/napari-medseg demo --out demo_output; } ); \
	else \
		echo "No display found: running the headless demo (napari-medseg gui opens the viewer)."; \
		$(VENV)/bin/napari-medseg demo --out demo_output; \
	fi

demo-headless: $(VENV)/.core
	$(VENV)/bin/napari-medseg demo --out demo_output

gui: $(VENV)/.gui
	$(VENV)/bin/napari-medseg gui --sample mri

xvfb:
	@command -v xvfb-run >/dev/null 2>&1 || { \
		echo "installing Xvfb for the napari tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(XVFB_PKGS) >/dev/null; }

test: $(VENV)/.testing xvfb
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q

lint: $(VENV)/.testing
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.testing
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.testing
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output bench_output build *.egg-info
