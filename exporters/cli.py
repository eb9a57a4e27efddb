"""``acestep-export``: export the text2music ONNX graphs of a checkpoint and write their manifest.

    acestep-export --checkpoint-dir DIR --out DIR [--graphs text_encoder,dit_decoder]
    acestep-export --checkpoint-dir DIR [--validate]   # into the project's cache, the folder pytest and the runtimes use
    acestep-export --profile fp16 --from DIR/fp32 --out DIR/fp16     # a lighter profile of an fp32 folder

Without ``--checkpoint-dir`` the folder comes from ``$ACESTEP_CHECKPOINT_DIR`` or is the tiny synthetic
checkpoint (generated on first use), like every other entry point of the project.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from acestep_parity.exporters.specs import EXPORTER, GRAPH_SPECS, parse_graph_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint folder in the upstream layout")
    parser.add_argument("--out", default=None, help="output folder for <graph>.onnx and manifest.json (default: the "
                        "project cache .cache/artifacts/<checkpoint id>/fp32, which pytest and both runtimes use)")
    parser.add_argument("--graphs", default=None,
                        help=f"comma-separated subset of {','.join(GRAPH_SPECS)} (default: all)")
    parser.add_argument("--external-data-threshold", type=int, default=None, metavar="BYTES",
                        help="write a graph with external data above this many weight bytes "
                             f"(default {EXPORTER.external_data_threshold_bytes}; 0 forces external data)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="export in this many processes (each loads the checkpoint; for small checkpoints)")
    parser.add_argument("--per-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="export each graph in a child process of its own that reads only that graph's modules "
                             "(default: for checkpoints of 1 GiB and more, i.e. the real model)")
    parser.add_argument("--validate", action="store_true",
                        help="run each written graph on a two-shape grid against its PyTorch module and record "
                             "max_abs / rmse in the manifest (about a minute per full-size graph)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # a worker of export_all: no summary
    parser.add_argument("--profile", choices=("fp16", "int8_dynamic", "int8_static"), default=None,
                        help="derive this profile from the fp32 folder --from (default: export the fp32 graphs); "
                             "see docs/onnx_quantization.md")
    parser.add_argument("--from", dest="source", default=None, metavar="DIR",
                        help="with --profile: the fp32 ONNX folder (default: export the checkpoint's fp32 graphs "
                             "into the cache first)")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="with --profile: skip measuring accuracy and speed against fp32 into the manifest")
    parser.add_argument("--print-contract", action="store_true",
                        help="print the I/O contract tables of docs/io_contract.md (from exporters/specs.py) and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_contract:
        from acestep_parity.exporters.contract import render_tables

        print(render_tables())
        return 0
    if args.profile:
        if not args.out:
            print("acestep-export: --profile needs --out (the folder of the derived profile)", file=sys.stderr)
            return 2
        from acestep_parity.exporters.profiles.cli import derive_main

        return derive_main(args)
    try:
        graphs = parse_graph_list(args.graphs)
    except ValueError as exc:
        print(f"acestep-export: {exc}", file=sys.stderr)
        return 2
    from acestep_parity import paths
    from acestep_parity.exporters.export import export_all

    if not args.out:
        if args.graphs or args.external_data_threshold is not None:
            print("acestep-export: --graphs and --external-data-threshold need --out (the project's cache holds "
                  "complete exports with the default settings only)", file=sys.stderr)
            return 2
        return export_into_cache(args)
    settings = EXPORTER
    if args.external_data_threshold is not None:
        settings = replace(EXPORTER, external_data_threshold_bytes=args.external_data_threshold)
    start = time.perf_counter()
    try:
        checkpoint = paths.resolve_checkpoint_dir(args.checkpoint_dir)
        manifest = export_all(checkpoint, Path(args.out), graphs, settings=settings, jobs=args.jobs,
                              log=lambda line: print(line, file=sys.stderr, flush=True), per_graph=args.per_graph,
                              validate=args.validate, defer_check=args.child)
    except (ValueError, RuntimeError, OSError) as exc:  # CheckpointError, ExportError, unreadable files
        print(f"acestep-export: error: {exc}", file=sys.stderr)
        return 2
    if args.child:
        return 0
    print(f"{manifest['checkpoint_id']}: {len(graphs)} graph(s) in {time.perf_counter() - start:.1f} s "
          f"-> {Path(args.out) / 'manifest.json'}", file=sys.stderr)
    for name in graphs:
        record = manifest["graphs"][name]
        print(f"{record['sha256']}  {record['file']}")
    return 0


def export_into_cache(args: argparse.Namespace) -> int:
    """No ``--out``: every graph into ``<cache>/artifacts/<checkpoint id>/fp32``, the folder that pytest,
    ``make realsize`` and both runtimes (their default ``--onnx-dir``) use, so one export serves them all."""
    from acestep_ort.host.assets import copy_runtime_assets, missing_assets
    from acestep_parity import paths
    from acestep_parity.checkpoint import checkpoint_id, file_hashes
    from acestep_parity.exporters.export import (
        artifacts_dir,
        ensure_artifacts,
        manifest_matches,
        with_lm_hashes,
    )

    start = time.perf_counter()
    try:
        checkpoint = paths.resolve_checkpoint_dir(args.checkpoint_dir)
        print(f"hashing {checkpoint} ...", file=sys.stderr, flush=True)
        hashes = file_hashes(checkpoint)
        ident = checkpoint_id(checkpoint, hashes)
        target = artifacts_dir(ident)
        reused = manifest_matches(target, with_lm_hashes(checkpoint, hashes))
        out = ensure_artifacts(checkpoint, ident, hashes, validate=args.validate,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
        if missing_assets(out):
            copy_runtime_assets(checkpoint, out)
    except (ValueError, RuntimeError, OSError) as exc:  # CheckpointError, ExportError, unreadable files
        print(f"acestep-export: error: {exc}", file=sys.stderr)
        return 2
    what = "already exported, reused (remove the folder to export again)" if reused else "exported"
    print(f"{ident}: {what} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
