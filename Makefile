# Set-up and everyday commands for napari-spoco.
#   make demo   set up .venv and run the demo on the bundled sample data: napari opens with the
#               SPOCO panel (headless on a virtual display when there is none; results in demo_output/)
#   make test   set up .venv (and, on Linux, the virtual display) and run the tests
#   make lint   ruff check + ruff format --check
#   make clean  remove build output and caches (keeps .venv; `make distclean` removes it too)

PYTHON ?= python3
VENV   := .venv
ifeq ($(OS),Windows_NT)
BIN    := $(VENV)/Scripts
else
BIN    := $(VENV)/bin
endif
VENV_PY := $(BIN)/python
# Written after a successful install; newer inputs trigger a re-install.
STAMP   := $(VENV)/.napari-spoco-installed
PYTEST_ARGS ?=

UNAME_S := $(shell uname -s 2>/dev/null || echo Unknown)

# Debian/Ubuntu packages for Xvfb and for Qt's xcb platform plugin + OpenGL (napari draws with vispy).
SYSTEM_PACKAGES := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
	libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 \
	libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3

# The demo opens napari with the sample and the SPOCO panel, segments with the nuclei generalist,
# paints, fine-tunes it and segments again.
# Without a screen (Linux) it runs headless on a virtual display and writes demo_output/.
DEMO_DEPS :=
DEMO_WRAP :=
DEMO_ARGS := --out demo_output
ifeq ($(UNAME_S),Linux)
ifeq ($(strip $(DISPLAY)$(WAYLAND_DISPLAY)),)
DEMO_DEPS := system-deps
DEMO_WRAP := env -u QT_QPA_PLATFORM xvfb-run -a -s "-screen 0 1600x1200x24"
DEMO_ARGS := --headless --out demo_output
endif
endif

.PHONY: venv system-deps test lint demo clean distclean

venv: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt napari.yaml hatch_build.py | $(VENV_PY)
	$(VENV_PY) -m pip install --upgrade pip
	$(VENV_PY) -m pip install -c constraints.txt -e ".[dev]"
	@touch $@

# Linux only: Xvfb and the libraries Qt needs to open a window on it.
system-deps:
	@set -eu; \
	if [ "$(UNAME_S)" != Linux ]; then echo "system-deps: nothing to install on $(UNAME_S)"; exit 0; fi; \
	installed() { dpkg-query -W -f='$${Status}' "$$1" 2>/dev/null | grep -q 'install ok installed'; }; \
	missing=""; \
	if command -v dpkg-query >/dev/null 2>&1; then \
		for p in $(SYSTEM_PACKAGES); do installed "$$p" || installed "$${p}t64" || missing="$$missing $$p"; done; \
	elif ! command -v Xvfb >/dev/null 2>&1; then missing="$(SYSTEM_PACKAGES)"; fi; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1; then \
		SUDO=""; if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
		echo "system-deps: installing$$missing"; \
		$$SUDO apt-get update; \
		pkgs=""; \
		for p in $$missing; do \
			if apt-cache show "$$p" >/dev/null 2>&1; then pkgs="$$pkgs $$p"; \
			elif apt-cache show "$${p}t64" >/dev/null 2>&1; then pkgs="$$pkgs $${p}t64"; \
			else echo "system-deps: warning: no apt package '$$p' here, skipped"; fi; \
		done; \
		if [ -n "$$pkgs" ]; then $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$pkgs; fi; \
	elif [ -n "$$missing" ]; then \
		echo "system-deps: apt-get not found; install with your package manager:$$missing"; \
	fi; \
	if ! command -v Xvfb >/dev/null 2>&1; then \
		echo ""; \
		echo "ERROR: Xvfb is not on PATH."; \
		echo "The tests and the headless demo draw napari windows on a virtual X display (Xvfb)."; \
		echo "Install Xvfb and Qt's xcb libraries (Debian/Ubuntu: $(SYSTEM_PACKAGES)), then re-run make."; \
		exit 1; \
	fi; \
	echo "system-deps: Xvfb found at $$(command -v Xvfb)"

# pytest-xvfb starts Xvfb itself; QT_QPA_PLATFORM=offscreen would stop napari from drawing.
test: venv system-deps
	env -u QT_QPA_PLATFORM $(VENV_PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: venv $(DEMO_DEPS)
	$(DEMO_WRAP) $(BIN)/napari-spoco demo $(DEMO_ARGS)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis demo_output
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
