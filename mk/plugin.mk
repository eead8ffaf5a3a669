# QGIS plugin packaging: `make install` copies the plugin into a QGIS profile, `make zip` builds dist/urbanmtl-<version>.zip.
# Included from the top Makefile. Both use the same staged copy, so what is installed is what is shipped.

PLUGIN_NAME := urbanmtl
PLUGIN_VERSION := $(shell sed -n 's/^version=//p' metadata.txt)
# The profile QGIS starts with by default; override e.g. QGIS_PROFILE_DIR=~/.local/share/QGIS/QGIS3/profiles/work
QGIS_PROFILE_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
# Staging folder (its last component must be the plugin name) and zip path; both may be overridden.
PLUGIN_STAGE ?= build/plugin/$(PLUGIN_NAME)
PLUGIN_ZIP ?= dist/$(PLUGIN_NAME)-$(PLUGIN_VERSION).zip
# What QGIS needs: the plugin files, the engine, the bundled model, the configs (not tests, bench, venv, caches,
# training run outputs). Files missing from a checkout (e.g. no LICENSE yet) are skipped by $(wildcard).
# core/ includes core/worker.py, the engine process the algorithm starts (ui/engine.py), so it must ship whole.
PLUGIN_CONTENT := $(wildcard metadata.txt __init__.py plugin.py LICENSE* README* CITATION*) \
	$(wildcard core ui models configs)
PLUGIN_EXCLUDES := --exclude=__pycache__ --exclude='*.pyc' --exclude='*.pyo' --exclude=.pytest_cache \
	--exclude=runs --exclude=demo --exclude=.cache --exclude='*.tmp' --exclude='.*.tmp*'

.PHONY: install zip plugin-stage

plugin-stage:
	@test -n "$(PLUGIN_VERSION)" || { echo "error: metadata.txt has no version= line" >&2; exit 2; }
	rm -rf $(PLUGIN_STAGE)
	mkdir -p $(PLUGIN_STAGE)
	tar -cf - $(PLUGIN_EXCLUDES) $(PLUGIN_CONTENT) | tar -xf - -C $(PLUGIN_STAGE)

install: plugin-stage
	mkdir -p "$(QGIS_PROFILE_DIR)/python/plugins"
	rm -rf "$(QGIS_PROFILE_DIR)/python/plugins/$(PLUGIN_NAME)"
	cp -R $(PLUGIN_STAGE) "$(QGIS_PROFILE_DIR)/python/plugins/$(PLUGIN_NAME)"
	@echo "Installed $(PLUGIN_NAME) $(PLUGIN_VERSION) into $(QGIS_PROFILE_DIR)/python/plugins/$(PLUGIN_NAME);" \
		"enable it in Plugins > Manage and Install Plugins (or: qgis_process plugins enable $(PLUGIN_NAME))."

zip: plugin-stage
	mkdir -p $(dir $(PLUGIN_ZIP))
	rm -f $(PLUGIN_ZIP)
	cd $(dir $(PLUGIN_STAGE)) && /usr/bin/python3 -m zipfile -c $(abspath $(PLUGIN_ZIP)) $(PLUGIN_NAME)
	@echo "Wrote $(PLUGIN_ZIP)"
