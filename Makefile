# acestep-parity: `make run` and `make test` work on a fresh machine with nothing prepared.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-$(shell cat pyproject.toml runtimes/py_ort/pyproject.toml | sha256sum | cut -c1-16)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# PyPI's torch wheel brings its CUDA libraries (the venv is 7.6 GB, 4.3 GB of it nvidia-*), and pip holds every
# downloaded wheel until it has installed them all: the install needs about SETUP_GB free. pip's own cache would keep
# a second copy of those wheels for good, so it is off (a later install downloads again). The check fails early with
# the figures rather than pip's "No space left on device" halfway; DISK_CHECK=0 skips it.
export PIP_NO_CACHE_DIR := 1
SETUP_GB ?= 12
DISK_CHECK ?= 1
DISK_CHECK_CMD = if [ "$(DISK_CHECK)" != 0 ]; then \
	free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ -n "$$free_kb" ] && [ "$$free_kb" -lt $$(( $(SETUP_GB) * 1024 * 1024 )) ]; then \
		echo "make: $$(( free_kb / 1024 / 1024 )) GB free on $$(df -P . | awk 'NR==2 {print $$6}'), the venv's install needs about $(SETUP_GB) GB" \
			"(torch with its CUDA wheels from PyPI: 7.6 GB installed, the downloaded wheels on top while pip works)." \
			"Free some space, or run with DISK_CHECK=0 to try anyway." >&2; \
		exit 1; \
	fi; \
fi
# pytest-xdist workers: 2 on the 2-core CI machine; override with `make test XDIST=0`.
XDIST ?= 2
PYTEST_XDIST := $(if $(filter 0,$(XDIST)),,-n $(XDIST) --dist loadgroup)
REPORTS := reports
# Rust: the workspace builds into ./target, cargo's own default, so `cargo run` / `cargo build` typed in the clone
# reuse the build. ./target is a link to a cache folder outside the clone, one per checkout path, so a fresh clone
# at the same path (CI) reuses the build, and two checkouts never share test binaries (they embed their path).
CARGO ?= $(or $(shell command -v cargo 2>/dev/null),$(wildcard $(HOME)/.cargo/bin/cargo),cargo)
CARGO_JOBS ?= 2
export CARGO_TARGET_DIR ?= $(CURDIR)/target
TARGET_CACHE := $(HOME)/.cache/acestep-parity/cargo-targets/$(notdir $(CURDIR))-$(shell printf '%s' "$(CURDIR)" | sha256sum | cut -c1-12)
HAVE_CARGO := $(shell command -v $(CARGO) 2>/dev/null)
# rustfmt is a rustup component; where it is missing the format check is skipped, not the build.
FMT_CHECK = @if $(CARGO) fmt --version >/dev/null 2>&1; then $(CARGO) fmt --check; else echo "rustfmt missing: format check skipped"; fi

.PHONY: setup run test lint coverage fuzz mutants clean rust rust-test rust-lint header dist host-deps target-link realsize

setup: $(DEPS_STAMP)

$(DEPS_STAMP): pyproject.toml runtimes/py_ort/pyproject.toml
	@$(DISK_CHECK_CMD)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e runtimes/py_ort -e ".[reference,test,mp3]"
	@rm -f $(VENV)/.deps-*
	@touch $@

run: setup rust
	$(PY) -m acestep_parity.cli demo --case cases/text2music_01.json --out out
	@if [ -x "$(CARGO_TARGET_DIR)/release/generate" ]; then \
		echo "Python-free: $(CARGO_TARGET_DIR)/release/generate --case cases/text2music_01.json"; \
		"$(CARGO_TARGET_DIR)/release/generate" --case cases/text2music_01.json --out out/text2music_01_rust_cli.wav; \
	fi

test: setup host-deps rust-test
	@mkdir -p $(REPORTS)
	$(PY) -m pytest $(PYTEST_XDIST) --junitxml=$(REPORTS)/junit.xml --html=$(REPORTS)/report.html \
		--self-contained-html --parity-report $(REPORTS)

# Branch coverage of the host logic, per module (not part of `make test`): the host unit tests and the shared FSM
# vectors' generator (what test_rust_vectors_are_current runs) over acestep_ort/host, import-cases and tolerances,
# and separately what the shared FSM vectors (lm_fsm.json) reach of
# lm_fsm.py; then the Rust crates acestep-core and acestep-ffi (scripts/rust_coverage.sh: cargo-llvm-cov with
# Debian's LLVM of rustc's version, branches on nightly), and what the same vectors reach of lm_fsm.rs.
# Reports in $(REPORTS)/coverage/ (text + HTML).
COVERAGE_INCLUDE := runtimes/py_ort/acestep_ort/host/*,acestep_parity/import_cases.py,acestep_parity/tolerances.py
COVERAGE_TESTS := tests/test_host_logic.py tests/test_lm_host.py tests/test_noise.py tests/test_case_contract.py \
	tests/test_import_mapping.py tests/test_cases_anywhere.py tests/test_folder_integrity.py
coverage: setup
	@mkdir -p $(REPORTS)/coverage
	$(PY) -m coverage run --branch --data-file=$(REPORTS)/coverage/host.data --include="$(COVERAGE_INCLUDE)" \
		-m pytest -q -p no:cacheprovider $(COVERAGE_TESTS) -k "not damaged and not record_serves and not rust"
	$(PY) -m coverage run -a --branch --data-file=$(REPORTS)/coverage/host.data --include="$(COVERAGE_INCLUDE)" \
		-m acestep_parity.lm_vectors
	$(PY) -m coverage report --data-file=$(REPORTS)/coverage/host.data | tee $(REPORTS)/coverage/host.txt
	$(PY) -m coverage html --data-file=$(REPORTS)/coverage/host.data -d $(REPORTS)/coverage/host-html -q
	$(PY) -m coverage run --branch --data-file=$(REPORTS)/coverage/fsm.data --include="*/host/lm_fsm.py" \
		-m acestep_parity.lm_vectors
	$(PY) -m coverage report -m --data-file=$(REPORTS)/coverage/fsm.data | tee $(REPORTS)/coverage/fsm_vectors.txt
	@if [ -n "$(HAVE_CARGO)" ]; then CARGO=$(CARGO) bash scripts/rust_coverage.sh $(REPORTS)/coverage; \
	else echo "cargo missing: no Rust coverage"; fi

# The C-ABI library's libFuzzer targets (json, tensors, tokens) under AddressSanitizer, FUZZ_SECONDS each (default 240)
# from an empty corpus (not part of `make test`; nightly Rust, cargo-fuzz pinned into the tool cache): summary, logs,
# corpus and any crash input in ~/.cache/acestep-parity/fuzz/ (rust/acestep-ffi/fuzz/README.md).
fuzz:
	@if [ -n "$(HAVE_CARGO)" ]; then CARGO=$(CARGO) bash scripts/fuzz_asan.sh; else echo "cargo missing: no fuzzing"; exit 2; fi

# Mutation testing of the host logic (not part of `make test`; about an hour on 2 cores): mutmut (pyproject.toml's
# `mutants` extra, scope in [tool.mutmut]) under the host unit tests and the shared-vectors check, then
# cargo-mutants (pinned into the tool cache, scope in .cargo/mutants.toml) on acestep-core under its own tests, in
# a target folder of its own. Counts, score and every surviving mutant in $(REPORTS)/mutants/ (scripts/mutants.sh).
mutants: setup
	CARGO=$(CARGO) bash scripts/mutants.sh $(if $(HAVE_CARGO),all,python)

# Parity at real size, opt-in (docs/realsize.md; never part of `make test`): a real checkpoint or the full synthetic
# preset (`acestep-parity synth --preset full --out DIR`). Header check, per-graph export (each graph in a child
# process, checked on a small grid), golden frozen by torch in its own process, then the parity and LM tests with
# every backend in a child process of its own, one at a time (pytest --isolate). Reports in $(REPORTS)/realsize/.
REALSIZE_CASES ?= text2music_02 text2music_07 simple_mode_01
realsize: setup rust
	@test -n "$(CHECKPOINT)" || { echo "usage: make realsize CHECKPOINT=/path/to/checkpoints"; exit 2; }
	@mkdir -p $(REPORTS)/realsize
	$(PY) -m acestep_parity.cli check-checkpoint $(CHECKPOINT)
	$(PY) -m acestep_parity.cli freeze --checkpoint-dir $(CHECKPOINT) $(addprefix --case ,$(REALSIZE_CASES))
	$(PY) -m pytest tests/test_parity.py tests/test_lm.py --isolate --checkpoint-dir $(CHECKPOINT) \
		$(addprefix --case ,$(REALSIZE_CASES)) --junitxml=$(REPORTS)/realsize/junit.xml \
		--html=$(REPORTS)/realsize/report.html --self-contained-html --parity-report $(REPORTS)/realsize

lint: setup rust-lint
	$(PY) -m ruff check .

# The Rust runtime (rust/, the `generate` binary). Without cargo the rust backend skips, saying how to build it.
# ./target -> the checkout's cache folder (only when ./target is the target folder and does not exist yet).
target-link:
	@if [ "$(CARGO_TARGET_DIR)" = "$(CURDIR)/target" ] && [ ! -e target ] && [ ! -L target ]; then \
		mkdir -p "$(TARGET_CACHE)" && ln -s "$(TARGET_CACHE)" target; fi

rust: target-link
ifdef HAVE_CARGO
	$(CARGO) build --release --locked -j $(CARGO_JOBS)
else
	@echo "cargo not found: the Rust runtime is not built (install Rust from rustup.rs); its tests will skip"
endif

rust-test: rust
ifdef HAVE_CARGO
	$(FMT_CHECK)
	$(CARGO) test --release --locked -j $(CARGO_JOBS)
endif

rust-lint: target-link
ifdef HAVE_CARGO
	$(FMT_CHECK)
	$(CARGO) clippy --locked -j $(CARGO_JOBS) --all-targets -- -D warnings
endif

# The C-ABI library (rust/acestep-ffi): regenerate include/acestep_runtime.h with cbindgen (a test fails when it is
# stale), and the release archive dist/acestep-runtime-*.tar.gz with SHA256SUMS (docs/dll_api.md).
header: target-link
	ACESTEP_UPDATE_HEADER=1 $(CARGO) test --release --locked -j $(CARGO_JOBS) -p acestep-ffi --test header

dist: rust
	bash scripts/dll_release.sh

clean:
	rm -rf $(REPORTS) out .cache .pytest_cache dist

# The C# host (examples/ffi/csharp) needs Mono (NuGet is unreachable, Debian's packages are not). Where it is
# missing and this runs as root with apt-get, it is installed; otherwise the C# test skips, saying how to install it.
host-deps:
	@if ! command -v mcs >/dev/null 2>&1 || ! command -v mono >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Mono (mono-mcs, mono-runtime) for the C# FFI host"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mono-mcs mono-runtime >/dev/null) \
				|| echo "Mono could not be installed: the C# host test will skip"; \
		else echo "Mono missing (apt-get install mono-mcs mono-runtime): the C# host test will skip"; fi; \
	fi
