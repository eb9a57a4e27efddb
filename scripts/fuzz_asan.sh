#!/usr/bin/env bash
# The C-ABI library's libFuzzer targets (rust/acestep-ffi/fuzz: json, tensors, tokens) under AddressSanitizer,
# each for a bounded time from an empty corpus: `make fuzz` runs this (not part of `make test`; nightly Rust).
#
# cargo-fuzz (crates.io, pinned) is installed once into the project's tool cache, as rust_coverage.sh does with
# cargo-llvm-cov. cargo fuzz builds with -Zsanitizer=address by default (plus debug assertions and overflow
# checks), into a target folder of its own, so the instrumented builds never replace the runtime's.
#
#   FUZZ_SECONDS   per target (default 240)        FUZZ_TARGETS  default "json tensors tokens"
#   FUZZ_OUT       corpus, artifacts, logs, summary (default ~/.cache/acestep-parity/fuzz)
#   ACESTEP_FUZZ_ONNX_DIR  an exported folder with LM files: `tokens` then runs the real LM tokenizer and FSM
#
# Writes $FUZZ_OUT/summary.txt (one line per target: libFuzzer's seconds, wall seconds with the build, executions,
# coverage, features, corpus size, peak RSS, crash artifacts)
# and $FUZZ_OUT/<target>.log; a crash leaves its input in $FUZZ_OUT/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../rust/acestep-ffi"
TOOLS=${ACESTEP_TOOLS:-$HOME/.cache/acestep-parity/tools}
CARGO_FUZZ_VERSION=0.13.2
CARGO=${CARGO:-cargo}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-240}
TARGETS=${FUZZ_TARGETS:-json tensors tokens}
OUT=${FUZZ_OUT:-$HOME/.cache/acestep-parity/fuzz}
TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/acestep-parity/fuzz-target}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
  $CARGO install --locked --quiet --root "$TOOLS" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export PATH="$TOOLS/bin:$PATH"

mkdir -p "$OUT"
summary="$OUT/summary.txt"
printf '%-8s %8s %8s %12s %8s %8s %8s %8s %8s\n' target seconds wall execs cov ft corpus rss_mb crashes > "$summary"
failed=0
for target in $TARGETS; do
  corpus="$OUT/corpus/$target"
  artifacts="$OUT/artifacts/$target"
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  log="$OUT/$target.log"
  echo "fuzz: $target under AddressSanitizer for ${SECONDS_PER_TARGET}s (log $log)" >&2
  start=$(date +%s)
  rc=0
  cargo +nightly fuzz run --sanitizer address --target-dir "$TARGET_DIR" "$target" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -timeout=30 -seed=1 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  wall=$(( $(date +%s) - start ))
  # "Done N runs in S second(s)": libFuzzer's own time (the wall time above includes the ASan build)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  # libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/..." (or the last "#N ..." line on a crash)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  crashes=$(find "$artifacts" -type f | wc -l)
  printf '%-8s %8s %8s %12s %8s %8s %8s %8s %8s\n' "$target" "${took:-?}" "$wall" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "${rss:-?}" "$crashes" >> "$summary"
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    echo "fuzz: $target failed (exit $rc, $crashes artifact(s) in $artifacts); the end of $log:" >&2
    tail -n 40 "$log" >&2
    failed=1
  fi
done
cat "$summary"
exit "$failed"
