# urbanmtl: `make test` installs everything and runs the tests; `make demo` maps a real Sentinel-2 scene.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM := offscreen
export TF_CPP_MIN_LOG_LEVEL := 2

APT_PACKAGES := qgis python3-qgis qgis-providers python3-h5py python3-rasterio python3-fiona python3-yaml \
	python3-matplotlib python3-scipy python3-venv python3-pip gdal-bin python3-gdal \
	xvfb xauth libgl1-mesa-dri libglx-mesa0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test test-core test-desktop demo system venv clean litert

# System packages from Debian 12 (QGIS 3.22 LTR and the compiled geospatial stack); skipped when present.
system:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "Installing Debian packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends $(APT_PACKAGES); \
	fi

$(VENV)/.installed: requirements.txt | system
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# TensorFlow pulls pip's h5py; inside QGIS it clashes with Debian's HDF5, so Debian's python3-h5py is used.
	$(PY) -m pip uninstall -q -y h5py || true
	touch $@

venv: system $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

test-core: venv
	$(PY) -m pytest -q tests/core

# The real QGIS desktop under Xvfb with OpenGL (GLX): the plugin as a user runs it (also part of `make test`).
test-desktop: venv
	$(PY) -m pytest -q tests/desktop

# Release step: the bundled model's LiteRT files, written only if LiteRT and TensorFlow map every shared city scene
# (both dates) the same (core.export_litert; about 4 minutes on 2 cores).
SHARED_CITIES := $(wildcard ../shared/data/cities/*_S2L1C_10band.tif ../shared/data/cities_date2/*_S2L1C_10band.tif)
litert: venv
	$(PY) -m core.export_litert --check $(SHARED_CITIES)

demo: venv
	$(PY) -m tools.demo

clean:
	rm -rf $(VENV) .pytest_cache dist demo build

-include mk/*.mk
