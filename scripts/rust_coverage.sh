#!/usr/bin/env bash
# Branch coverage of the Rust host logic (acestep-core, acestep-ffi), per file: `make coverage` runs this.
#
# cargo-llvm-cov (crates.io, installed into the project's tool cache) over the crates' own tests, with the LLVM
# tools of the same major version as rustc's LLVM from Debian's packages (llvm-NN; rustup's llvm-tools component
# is not reachable here). Branch coverage needs a nightly rustc (-Z coverage-options=branch); without one the
# report has regions and lines only, and says so. Writes, into $1 (default reports/coverage):
#   rust.txt            every file of both crates, all of their tests
#   rust_fsm_vectors.txt  lm_fsm.rs as the shared FSM vectors alone reach it (tests/lm_vectors.rs)
#   rust-html/          the HTML report of rust.txt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-reports/coverage}
mkdir -p "$OUT"
TOOLS=${ACESTEP_TOOLS:-$HOME/.cache/acestep-parity/tools}
LLVM_COV_VERSION=0.9.1
CARGO=${CARGO:-cargo}

toolchain=""
branch=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain="+nightly"
  branch=(--branch)
else
  echo "rust coverage: no nightly toolchain (rustup toolchain install nightly): regions and lines only, no branches" >&2
fi
major=$(rustc $toolchain -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
llvm_bin=/usr/lib/llvm-$major/bin
if [ ! -x "$llvm_bin/llvm-cov" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "rust coverage: installing llvm-$major (Debian) for rustc's LLVM $major" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$major" >/dev/null
  else
    echo "rust coverage: $llvm_bin/llvm-cov missing (apt-get install llvm-$major, rustc's LLVM major)" >&2
    exit 2
  fi
fi
if [ ! -x "$TOOLS/bin/cargo-llvm-cov" ]; then
  echo "rust coverage: installing cargo-llvm-cov $LLVM_COV_VERSION into $TOOLS" >&2
  $CARGO install --locked --quiet --root "$TOOLS" cargo-llvm-cov --version "$LLVM_COV_VERSION"
fi
export PATH="$TOOLS/bin:$PATH" LLVM_COV="$llvm_bin/llvm-cov" LLVM_PROFDATA="$llvm_bin/llvm-profdata"
# its own target folder: instrumented builds never replace the runtime's
export CARGO_LLVM_COV_TARGET_DIR=${CARGO_LLVM_COV_TARGET_DIR:-$HOME/.cache/acestep-parity/llvm-cov-target}

$CARGO $toolchain llvm-cov "${branch[@]}" -p acestep-core -p acestep-ffi --quiet --no-report
$CARGO $toolchain llvm-cov report "${branch[@]}" --summary-only | tee "$OUT/rust.txt"
$CARGO $toolchain llvm-cov report "${branch[@]}" --html --output-dir "$OUT/rust-html" >/dev/null
$CARGO $toolchain llvm-cov clean --workspace --quiet
$CARGO $toolchain llvm-cov "${branch[@]}" -p acestep-core --test lm_vectors --quiet --no-report
$CARGO $toolchain llvm-cov report "${branch[@]}" --show-missing-lines --summary-only \
  | grep -E '^(Filename|-+$|.*lm_fsm\.rs|Uncovered Lines:|.*lm_fsm\.rs: )' | tee "$OUT/rust_fsm_vectors.txt"
