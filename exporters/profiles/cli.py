"""``acestep-export --profile NAME``: derive a lighter profile folder from an fp32 folder and print its figures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def derive_main(args: argparse.Namespace) -> int:
    from acestep_parity.exporters.profiles.derive import derive_profile
    from acestep_parity.exporters.profiles.evaluate import main as print_table

    source = Path(args.source) if args.source else _cached_fp32(args.checkpoint_dir)
    if not (source / "manifest.json").is_file():
        print(f"acestep-export: {source} is not an exported fp32 folder (no manifest.json)", file=sys.stderr)
        return 2
    golden = None
    from acestep_parity.exporters.profiles.derive import _golden_dir

    golden = _golden_dir(source)
    start = time.perf_counter()
    derive_profile(source, Path(args.out), args.profile, evaluate=not args.no_evaluate, golden_dir=golden,
                   log=lambda line: print(line, file=sys.stderr))
    print(f"{args.profile}: derived from {source} in {time.perf_counter() - start:.1f} s -> "
          f"{Path(args.out) / 'manifest.json'}", file=sys.stderr)
    return print_table([str(args.out)])


def _cached_fp32(checkpoint_dir: str | None) -> Path:
    from acestep_parity import paths
    from acestep_parity.checkpoint import checkpoint_id, file_hashes
    from acestep_parity.exporters.export import ensure_artifacts

    directory = paths.resolve_checkpoint_dir(checkpoint_dir)
    hashes = file_hashes(directory)
    return Path(ensure_artifacts(directory, checkpoint_id(directory, hashes), hashes))
