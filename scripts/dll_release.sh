#!/usr/bin/env bash
# Release archive of the C-ABI library (make dist): dist/acestep-runtime-<version>-<os>-<arch>/ with the
# library, the header, the ABI symbol list, the API doc and the example hosts, then a .tar.gz of it and
# SHA256SUMS over every file. The library must be built (cargo build --release -p acestep-ffi).
# DIST_DIR (default dist, relative to the repository root) is where the folder and the archive go. The archive
# runs from where it is unpacked: each example's README says how (examples/<host>/README.md, tested by
# tests/test_example_readmes.py).
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${DIST_DIR:-dist}"
target="${CARGO_TARGET_DIR:-target}"
lib="$target/release/libacestep_runtime.so"
[ -f "$lib" ] || { echo "dll_release: $lib is not built; run cargo build --release -p acestep-ffi" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
name="acestep-runtime-${version}-$(uname -s | tr 'A-Z' 'a-z')-$(uname -m)"
out="$dist/$name"
rm -rf "$out" "$dist/$name.tar.gz"
mkdir -p "$out/lib" "$out/include" "$out/examples"
cp "$lib" "$out/lib/"
cp include/acestep_runtime.h "$out/include/"
cp rust/acestep-ffi/abi/v1.symbols "$out/"
cp docs/dll_api.md "$out/"
root="$PWD"
case "$dist" in /*) root="" ;; esac
for host in python c node csharp; do
  [ -d "examples/ffi/$host" ] || continue
  mkdir -p "$out/examples/$host"
  (cd "examples/ffi/$host" && git ls-files --cached --others --exclude-standard . | while read -r f; do
     mkdir -p "$root/$out/examples/$host/$(dirname "$f")"; cp "$f" "$root/$out/examples/$host/$f"; done)
done
(cd "$out" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)
tar -C "$dist" -czf "$dist/$name.tar.gz" "$name"
(cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$dist/$name.tar.gz"
cat "$dist/$name.tar.gz.sha256"
