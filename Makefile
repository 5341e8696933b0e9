# napari-medseg: `make demo` and `make test` set everything up from a fresh checkout.
# The virtual environment lives in .venv/. TORCH_SPEC installs torch first so that pip never
# replaces it with a multi-GB CUDA build (override, e.g. TORCH_SPEC="torch==2.5.1+cu124").

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Xvfb plus what Qt 6's xcb platform plugin links against (libxcb-cursor0 since Qt 6.5).
XVFB_PKGS := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
	libxcb-render-util0 libxkbcommon-x11-0 libxcb-shape0 libgl1 libegl1 libfontconfig1 libdbus-1-3 \
	libxcb-cursor0 libxcb-randr0 libxcb-xfixes0 libxcb-sync1 libxcb-shm0 libxcb-xkb1 \
	libx11-xcb1 libxkbcommon0
# The GUI tests run under PyQt6 (napari 0.9 deprecates PyQt5). Left alone, qtpy prefers PyQt5
# whenever it is installed, and falls back (rewriting QT_API) when the named binding is missing;
# MEDSEG_EXPECT_QT lets tests/test_gui_plugin.py check what was really loaded.
QT_ENV := QT_API=pyqt6 PYTEST_QT_API=pyqt6 MEDSEG_EXPECT_QT=pyqt6
# Where package-check builds and installs the distributions (emptied every run; git-ignored).
PKG_TMP ?= $(CURDIR)/build/package-check

.PHONY: demo demo-headless gui xvfb test package-check lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(PY) setup.cfg pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

# PyQt5 left over from an older .venv is removed: the extras moved to PyQt6, and a stale binding
# must not be what the tests (or napari) end up using.
$(VENV)/.gui: $(VENV)/.core
	$(PIP) install -q "$(TORCH_SPEC)" -e ".[gui]"
	$(PIP) uninstall -q -y PyQt5 PyQt5-Qt5 PyQt5-sip 2>/dev/null || true
	touch $@

$(VENV)/.testing: $(VENV)/.core
	$(PIP) install -q "$(TORCH_SPEC)" -e ".[testing]"
	$(PIP) uninstall -q -y PyQt5 PyQt5-Qt5 PyQt5-sip 2>/dev/null || true
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

# Installs whichever of XVFB_PKGS is missing (a machine may have xvfb-run but not Qt 6's libs).
xvfb:
	@if command -v dpkg-query >/dev/null 2>&1; then \
		missing=$$(for p in $(XVFB_PKGS); do \
			dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	else \
		missing=$$(command -v xvfb-run >/dev/null 2>&1 || echo "$(XVFB_PKGS)"); \
	fi; \
	if [ -n "$$missing" ]; then \
		echo "installing for the napari tests:" $$missing; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(VENV)/.testing xvfb
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(QT_ENV) xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q
	$(MAKE) --no-print-directory package-check

# What PyPI and the napari hub get: sdist + wheel (the wheel built from the sdist), twine check,
# the wheel's file list, then a fresh venv with the pinned torch and the wheel (no checkout on
# sys.path): the CLI starts and npe2 validates the manifest. pip's cache keeps this quick.
package-check: $(VENV)/.testing
	rm -rf $(PKG_TMP) && mkdir -p $(PKG_TMP)
	$(PY) -m build -q --outdir $(PKG_TMP)/dist . >$(PKG_TMP)/build.log 2>&1 || { cat $(PKG_TMP)/build.log; exit 1; }
	$(VENV)/bin/twine check --strict $(PKG_TMP)/dist/*
	$(PY) tools/check_wheel.py $(PKG_TMP)/dist/*.whl $(PKG_TMP)/dist/*.tar.gz
	$(PYTHON) -m venv $(PKG_TMP)/venv
	$(PKG_TMP)/venv/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(PKG_TMP)/venv/bin/python -m pip install -q $(PKG_TMP)/dist/*.whl npe2
	cd $(PKG_TMP) && venv/bin/napari-medseg --help >/dev/null && venv/bin/napari-medseg list-models >/dev/null
	cd $(PKG_TMP) && venv/bin/npe2 validate napari-medseg
	rm -rf $(PKG_TMP)

lint: $(VENV)/.testing
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.testing
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# matplotlib draws the learning curve (benchmarks/bench_base_models.py); only benchmarks need it.
$(VENV)/.bench: $(VENV)/.testing
	$(PIP) install -q "$(TORCH_SPEC)" -e ".[bench]"
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output bench_output build dist *.egg-info
