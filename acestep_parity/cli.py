"""``acestep-parity``: synthesize checkpoints, freeze goldens, generate with the reference."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from acestep_ort.host.progress import stderr_progress
from acestep_parity import paths


def cmd_synth(args: argparse.Namespace) -> int:
    from acestep_parity.synth.generate import generate
    from acestep_parity.synth.presets import get_preset

    start = time.perf_counter()
    hashes = generate(get_preset(args.preset), Path(args.out))
    for name, digest in hashes.items():
        print(f"{digest}  {name}")
    print(f"wrote {len(hashes)} files to {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def cmd_freeze(args: argparse.Namespace) -> int:
    from acestep_ort.host.case import discover_cases, valid_cases
    from acestep_parity.checkpoint import checkpoint_id, file_hashes
    from acestep_parity.golden import GoldenStore
    from acestep_parity.torch_ref import load_engine

    ckpt = paths.resolve_checkpoint_dir(args.checkpoint_dir)
    hashes = file_hashes(ckpt)
    cid = checkpoint_id(ckpt, hashes)
    store = GoldenStore(Path(args.golden_dir) / cid, cid, hashes, ckpt if args.checkpoint_dir else None)
    from acestep_ort.host.lm_planner import golden_planner_record
    from acestep_parity.checkpoint import has_lm, lm_file_hashes

    tasks = ("text2music", "simple_mode") if has_lm(ckpt) else ("text2music",)
    cases = [c for c in valid_cases(discover_cases(Path(args.cases_dir), args.case)) if c.task in tasks]
    if not cases:
        print(f"no {' or '.join(tasks)} case matched", file=sys.stderr)
        return 2
    engine = load_engine(ckpt)
    for case in cases:
        start = time.perf_counter()
        if case.task == "simple_mode":
            caps = engine.generate_simple(case, progress=stderr_progress())
            path = store.write(case.id, case.sha256, caps.arrays,
                               planner=golden_planner_record(lm_file_hashes(ckpt), case))
        else:
            caps = engine.generate(case.request(), progress=stderr_progress())
            path = store.write(case.id, case.sha256, caps.arrays)
        print(f"froze {case.id} -> {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from acestep_ort.host.audio import save_audio
    from acestep_ort.host.case import resolve_case
    from acestep_parity.torch_ref import load_engine

    case = resolve_case(args.case, Path(args.cases_dir))
    ckpt = paths.resolve_checkpoint_dir(args.checkpoint_dir)
    engine = load_engine(ckpt)
    if case.task == "simple_mode":
        caps = engine.generate_simple(case, progress=stderr_progress())
    else:
        caps = engine.generate(case.request(), progress=stderr_progress())
    out = Path(args.out)
    for b in range(case.batch_size):
        target = out if case.batch_size == 1 else out.with_name(f"{out.stem}_{b}{out.suffix}")
        save_audio(target, caps["audio"][b])
        print(f"wrote {target}")
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in caps.timings.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate one case on every available backend, write the audio, print a parity summary vs torch."""
    from acestep_ort.host.audio import save_audio
    from acestep_ort.host.case import resolve_case
    from acestep_parity import metrics
    from acestep_parity.backends import BACKEND_NAMES, REGISTRY, BackendContext
    from acestep_parity.checkpoint import checkpoint_id, file_hashes

    case = resolve_case(args.case, Path(args.cases_dir))
    ckpt = paths.resolve_checkpoint_dir(args.checkpoint_dir)
    cid = checkpoint_id(ckpt, file_hashes(ckpt))
    print(f"checkpoint {ckpt} ({cid}), case {case.id}")
    out_dir = Path(args.out)
    runs = {}
    for name in (n for n in BACKEND_NAMES if n in REGISTRY):
        backend = REGISTRY[name](BackendContext(ckpt, cid, "fp32", paths.cache_dir()))
        availability = backend.availability()
        if not availability.ok:
            print(f"  {name:7s} skipped: {availability.reason}")
            continue
        start = time.perf_counter()
        caps = backend.run_case(case)
        runs[name] = caps
        for b in range(case.batch_size):
            suffix = f"_{b}" if case.batch_size > 1 else ""
            path = save_audio(out_dir / f"{case.id}_{name}{suffix}.{case.output_format}", caps["audio"][b])
        print(f"  {name:7s} {time.perf_counter() - start:6.2f} s -> {path}")
    reference = runs.get("torch")
    if reference is not None:
        print("parity vs torch:")
        for name, caps in runs.items():
            if name == "torch":
                continue
            vt = metrics.max_abs(reference["vt"], caps["vt"])
            lat = metrics.max_abs(reference["pred_latents"], caps["pred_latents"])
            snr = metrics.snr_db(reference["audio"], caps["audio"])
            corr = metrics.pearson(reference["audio"], caps["audio"])
            print(f"  {name:7s} vt max_abs {vt:.3g}  pred_latents max_abs {lat:.3g}  audio SNR {snr:.1f} dB  "
                  f"Pearson {corr:.6f}")
    return 0


def cmd_spread(args: argparse.Namespace) -> int:
    """Run the reference under each ISA / thread setting and print how far it moves from the golden."""
    import json

    from acestep_ort.host.case import discover_cases, valid_cases
    from acestep_parity import spread
    from acestep_parity.checkpoint import checkpoint_id, file_hashes
    from acestep_parity.golden import GoldenStore

    ckpt = paths.resolve_checkpoint_dir(args.checkpoint_dir)
    hashes = file_hashes(ckpt)
    cid = checkpoint_id(ckpt, hashes)
    store = GoldenStore(Path(args.golden_dir) / cid, cid, hashes, ckpt if args.checkpoint_dir else None)
    cases = [c for c in valid_cases(discover_cases(Path(args.cases_dir), args.case)) if c.task == "text2music"]
    settings = [s for s in spread.sweep_settings() if not args.setting or s.name in args.setting]
    if not cases or not settings:
        print("no text2music case or no setting matched", file=sys.stderr)
        return 2
    by_id = {c.id: c for c in cases}
    print(f"reference vs golden {cid}, max_abs/rmse per tensor, worst over {len(cases)} case(s):")
    results = spread.sweep(ckpt, Path(args.cases_dir), lambda i: store.load(i, by_id[i].sha256),
                           [c.id for c in cases], settings)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def cmd_import_cases(args: argparse.Namespace) -> int:
    """Convert upstream examples / predecessor fixtures into case files; report per file; refuse what does not fit."""
    from acestep_parity.import_cases import import_tree

    source = Path(args.source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    done, refused = import_tree(source, Path(args.out), seed=args.seed, shift=args.shift, strict=args.strict)
    for item in done:
        print(f"imported {item.source} -> {item.target} ({item.fmt})")
        for note in item.notes:
            print(f"    note: {note}")
    for message in refused:
        print(f"refused {message}", file=sys.stderr)
    print(f"{len(done)} imported, {len(refused)} refused; run them with `pytest --cases-dir {args.out}`")
    return 1 if refused or not done else 0


def cmd_check_checkpoint(args: argparse.Namespace) -> int:
    from acestep_parity.checkpoint_check import check_checkpoint

    problems = check_checkpoint(Path(args.checkpoint_dir))
    for problem in problems:
        print(problem)
    if problems:
        print(f"acestep-parity: {len(problems)} problem(s) in {args.checkpoint_dir}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint_dir}: no problem found (configs, files, safetensors headers: keys, shapes, dtypes, sizes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-parity", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic checkpoint in the upstream layout")
    p.add_argument("--preset", default="tiny", help="tiny (CI), wide (real widths, two layers per stack: benchmarks), full (real dimensions, random weights) or full-dit2 / full-dit8 (full with a 2- or 8-layer DiT: the depth study)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check-checkpoint", help="check a checkpoint folder from its configs and safetensors headers "
                                                "(seconds, nothing loaded): one line per problem")
    p.add_argument("checkpoint_dir", metavar="DIR", help="checkpoint folder in the upstream layout")
    p.set_defaults(func=cmd_check_checkpoint)

    p = sub.add_parser("freeze", help="run the PyTorch reference on every case and write the golden set")
    p.add_argument("--checkpoint-dir", help="checkpoint folder (default: the cached tiny synthetic one)")
    p.add_argument("--case", action="append", help="case id glob (repeatable; default: all text2music cases)")
    p.add_argument("--cases-dir", default=str(paths.CASES_DIR))
    p.add_argument("--golden-dir", default=str(paths.GOLDEN_DIR))
    p.set_defaults(func=cmd_freeze)

    p = sub.add_parser("import-cases", help="convert upstream ACE-Step example files or the predecessor port's "
                                            "fixture cases into case files")
    p.add_argument("source", help="a file or a folder (searched recursively for *.json)")
    p.add_argument("--out", required=True, help="folder to write the case files to")
    p.add_argument("--seed", type=int, default=42, help="seed for formats that carry none (default 42)")
    p.add_argument("--shift", type=float, default=3.0,
                   help="shift for formats that carry none (default 3.0, upstream's UI/CLI default)")
    p.add_argument("--strict", action="store_true",
                   help="refuse think/thinking=true instead of importing the thinking=False text2music case")
    p.set_defaults(func=cmd_import_cases)

    p = sub.add_parser("spread", help="measure how far the reference moves from the golden across ISA/thread "
                                      "settings on this machine")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--case", action="append", help="case id glob (repeatable; default: all text2music cases)")
    p.add_argument("--cases-dir", default=str(paths.CASES_DIR))
    p.add_argument("--golden-dir", default=str(paths.GOLDEN_DIR))
    p.add_argument("--setting", action="append", help="setting name (repeatable; default: all)")
    p.add_argument("--out", help="write the full results as JSON here")
    p.set_defaults(func=cmd_spread)

    p = sub.add_parser("generate", help="generate one case with the PyTorch reference and write audio")
    p.add_argument("--case", required=True, help="case JSON file, or a case id in --cases-dir")
    p.add_argument("--cases-dir", default=str(paths.CASES_DIR))
    p.add_argument("--checkpoint-dir")
    p.add_argument("--out", required=True, help="output file (.wav, .flac or .mp3)")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("demo", help="generate a case on every available backend and print a parity summary")
    p.add_argument("--case", required=True, help="case JSON file, or a case id in --cases-dir")
    p.add_argument("--cases-dir", default=str(paths.CASES_DIR))
    p.add_argument("--checkpoint-dir")
    p.add_argument("--out", default="out", help="output folder")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"acestep-parity: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
