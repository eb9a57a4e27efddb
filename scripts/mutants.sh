#!/usr/bin/env bash
# Mutation testing of the host logic: `make mutants` runs this (not part of `make test`; about an hour on 2 cores).
#
#   python  mutmut (pinned in pyproject.toml's `mutants` extra, installed into the venv) on the files of
#           [tool.mutmut] only_mutate (acestep_ort/host, tolerances.py, import_cases.py) under the fast host unit
#           tests and the shared-vectors check ([tool.mutmut] pytest_add_cli_args_test_selection)
#   rust    cargo-mutants (crates.io, pinned, installed into the project's tool cache as rust_coverage.sh installs
#           cargo-llvm-cov) on the acestep-core files of .cargo/mutants.toml under the crate's own tests
#           (unit tests and tests/, the shared vectors included), one mutant at a time, in a copy of the tree
#           (git-ignored files left out) that builds into a target folder of its own
#
#   scripts/mutants.sh [all|python|rust]      (default all)
#   MUTANTS_OUT        reports folder (default reports/mutants)
#   MUTANTS_JOBS       mutmut's parallel children (default 2)
#   MUTANTS_KEEP=1     keep mutmut's stage (.cache/mutants/python: `mutmut results`, `mutmut show NAME` there)
#   MUTANTS_TARGET_DIR cargo-mutants' target folder (default ~/.cache/acestep-parity/mutants-target)
#   MUTANTS_RUST_FILES acestep-core files to mutate instead of .cargo/mutants.toml's (e.g. rust/acestep-core/src/noise.rs)
#   MUTANTS_RUST_ARGS  more cargo-mutants arguments (e.g. "-F extract_caption" to re-run the mutants of a function)
#   MUTANTS_PY_NAMES   mutmut mutant names or globs to re-run, e.g. "acestep_ort.host.schedule.*"
#
# Writes $MUTANTS_OUT/python.{txt,json}, rust.{txt,json} (counts, score, every surviving mutant as file:line and
# the change), summary.md, python.log, rust.log, and cargo-mutants' own mutants.out/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
OUT=${MUTANTS_OUT:-reports/mutants}
PY=${PY:-.venv/bin/python}
JOBS=${MUTANTS_JOBS:-2}
TOOLS=${ACESTEP_TOOLS:-$HOME/.cache/acestep-parity/tools}
CARGO_MUTANTS_VERSION=27.1.0
CARGO=${CARGO:-cargo}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

python_part() {
  # mutmut's pin lives in pyproject.toml (extra `mutants`); install it where the venv has another version or none
  local missing
  missing=$("$PY" - <<'EOF'
try:
    import tomllib
except ImportError:  # Python 3.10: the test extra brings tomli
    import tomli as tomllib
from importlib.metadata import PackageNotFoundError, version
reqs = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mutants"]
def have(req):
    name, _, pin = req.partition("==")
    try:
        return version(name) == pin
    except PackageNotFoundError:
        return False
print(" ".join(r for r in reqs if not have(r)))
EOF
)
  if [ -n "$missing" ]; then
    echo "mutants: installing $missing into $(dirname "$(dirname "$PY")") (pyproject.toml's mutants extra)" >&2
    # shellcheck disable=SC2086
    "$PY" -m pip install -q $missing
  fi
  # mutmut 3 names a module after its path below ./ or src/, and runs the tests in ./mutants: the stage puts
  # acestep_ort (runtimes/py_ort/acestep_ort) under src/ and links acestep_parity, the tests and what they read
  # beside it; pyproject.toml (with [tool.mutmut]) is the checkout's. mutmut copies all of it into stage/mutants,
  # so a run tests a snapshot of the tree, and the tests' repository root is stage/mutants (cases, golden, the
  # Rust vectors); the synthetic checkpoint is the checkout's .cache.
  local stage=${MUTANTS_PY_STAGE:-$ROOT/.cache/mutants/python}
  rm -rf "$stage"
  mkdir -p "$stage/src" "$stage/rust/acestep-core/tests"
  ln -s "$ROOT/runtimes/py_ort/acestep_ort" "$stage/src/acestep_ort"
  local p
  for p in acestep_parity tests cases golden pytest.ini pyproject.toml; do ln -s "$ROOT/$p" "$stage/$p"; done
  ln -s "$ROOT/rust/acestep-core/tests/vectors" "$stage/rust/acestep-core/tests/vectors"
  local mutmut
  mutmut="$(cd "$(dirname "$PY")" && pwd)/mutmut"
  echo "mutants: mutmut $("$mutmut" --version | awk '{print $NF}') in $stage (log $OUT/python.log)" >&2
  local start rc=0
  start=$(date +%s)
  # shellcheck disable=SC2086
  (cd "$stage" && ACESTEP_PARITY_ROOT="$stage/mutants" ACESTEP_PARITY_CACHE="$ROOT/.cache" \
    "$mutmut" run --max-children "$JOBS" ${MUTANTS_PY_NAMES:-}) >"$OUT/python.log" 2>&1 || rc=$?
  local wall=$(( $(date +%s) - start ))
  if [ "$rc" != 0 ]; then
    echo "mutants: mutmut failed (exit $rc); the end of $OUT/python.log:" >&2
    tr '\r' '\n' <"$OUT/python.log" | grep -v '^⠀*$' | tail -n 30 >&2
    return "$rc"
  fi
  "$PY" scripts/mutants_report.py mutmut --stage "$stage" --out "$OUT" --seconds "$wall"
  if [ "${MUTANTS_KEEP:-0}" != 1 ]; then rm -rf "$stage"; fi
}

rust_part() {
  if [ ! -x "$TOOLS/bin/cargo-mutants" ]; then
    echo "mutants: installing cargo-mutants $CARGO_MUTANTS_VERSION into $TOOLS" >&2
    $CARGO install --locked --quiet --root "$TOOLS" cargo-mutants --version "$CARGO_MUTANTS_VERSION"
  fi
  export PATH="$TOOLS/bin:$PATH"
  # its own target folder (the Makefile's CARGO_TARGET_DIR is the runtime's ./target): mutated builds never
  # replace the runtime's, and the dependencies built once are reused by the next run
  export CARGO_TARGET_DIR=${MUTANTS_TARGET_DIR:-$HOME/.cache/acestep-parity/mutants-target}
  echo "mutants: cargo-mutants $CARGO_MUTANTS_VERSION on acestep-core (.cargo/mutants.toml; log $OUT/rust.log)" >&2
  local scope=() f
  if [ -n "${MUTANTS_RUST_FILES:-}" ]; then  # the config's other settings, without its file list
    scope=(--no-config --gitignore true --test-package acestep-core)
    for f in $MUTANTS_RUST_FILES; do scope+=(--file "$f"); done
  fi
  # the crate's own artifacts go before and after: a mutated build left there (same fingerprint hash from
  # another path) was picked up as fresh by a later plain `cargo test` in this folder
  $CARGO clean --quiet --package acestep-core
  local start rc=0
  start=$(date +%s)
  # exit 2: some mutants survived, 3: some timed out; both are results, not failures
  # shellcheck disable=SC2086
  $CARGO mutants --package acestep-core --jobs 1 --colors never --output "$OUT" ${scope[@]+"${scope[@]}"} \
    ${MUTANTS_RUST_ARGS:-} \
    >"$OUT/rust.log" 2>&1 || rc=$?
  local wall=$(( $(date +%s) - start ))
  $CARGO clean --quiet --package acestep-core
  if [ "$rc" != 0 ] && [ "$rc" != 2 ] && [ "$rc" != 3 ]; then
    echo "mutants: cargo-mutants failed (exit $rc); the end of $OUT/rust.log:" >&2
    tail -n 30 "$OUT/rust.log" >&2
    return "$rc"
  fi
  "$PY" scripts/mutants_report.py cargo --outcomes "$OUT/mutants.out" --out "$OUT" --seconds "$wall"
}

status=0
case "$WHAT" in
  python) python_part || status=$? ;;
  rust) rust_part || status=$? ;;
  all) python_part || status=$?; rust_part || status=$? ;;
  *) echo "usage: scripts/mutants.sh [all|python|rust]" >&2; exit 2 ;;
esac
"$PY" scripts/mutants_report.py summary --out "$OUT"
cat "$OUT/summary.md"
exit "$status"
