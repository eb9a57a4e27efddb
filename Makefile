# acestep-parity: `make run` and `make test` work on a fresh machine with nothing prepared.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# pytest-xdist workers: 2 on the 2-core CI machine; override with `make test XDIST=0`.
XDIST ?= 2
PYTEST_XDIST := $(if $(filter 0,$(XDIST)),,-n $(XDIST) --dist loadgroup)
REPORTS := reports

.PHONY: setup run test lint clean

setup: $(DEPS_STAMP)

$(DEPS_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[reference,test,mp3]"
	@rm -f $(VENV)/.deps-*
	@touch $@

run: setup
	$(PY) -m acestep_parity.cli demo --case cases/text2music_01.json --out out

test: setup
	@mkdir -p $(REPORTS)
	$(PY) -m pytest $(PYTEST_XDIST) --junitxml=$(REPORTS)/junit.xml --html=$(REPORTS)/report.html \
		--self-contained-html --parity-report $(REPORTS)

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(REPORTS) out .cache .pytest_cache
