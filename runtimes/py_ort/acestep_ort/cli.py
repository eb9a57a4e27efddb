"""``acestep-ort generate``: text2music on ONNX Runtime with nothing but onnxruntime, numpy, tokenizers, soundfile.

    acestep-ort generate --case cases/text2music_01.json --onnx-dir DIR --out out.wav [--dump captures.npz]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def cmd_generate(args: argparse.Namespace) -> int:
    from acestep_ort.host.audio import save_audio
    from acestep_ort.host.case import resolve_case
    from acestep_ort.host.progress import stderr_progress
    from acestep_ort.pipeline import load_engine
    from acestep_ort.session_manager import SessionConfig

    case = resolve_case(args.case, Path(args.cases_dir))
    if case.task != "text2music":
        raise ValueError(f"{args.case}: task {case.task!r} is not supported by this runtime (text2music only)")
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if args.cuda else ("CPUExecutionProvider",)
    start = time.perf_counter()
    engine = load_engine(Path(args.onnx_dir), SessionConfig(providers=providers))
    load_s = time.perf_counter() - start
    caps = engine.generate(case.request(), progress=None if args.quiet else stderr_progress())
    out = Path(args.out)
    for b in range(case.batch_size):
        target = out if case.batch_size == 1 else out.with_name(f"{out.stem}_{b}{out.suffix}")
        save_audio(target, caps["audio"][b])
        print(f"wrote {target}")
    if args.dump:
        np.savez_compressed(args.dump, **caps.arrays)
        print(f"wrote captures to {args.dump}")
    print(f"timings: load {load_s:.2f}s, " + ", ".join(f"{k} {v:.2f}s" for k, v in caps.timings.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acestep-ort", description="ACE-Step 1.5 text2music on ONNX Runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="generate audio for a case file")
    p.add_argument("--case", required=True, help="case JSON (cases/text2music_01.json), or a case id in --cases-dir")
    p.add_argument("--cases-dir", default="cases", help="folder that --case ids are looked up in (default: cases)")
    p.add_argument("--onnx-dir", required=True, help="folder with the exported graphs, manifest and assets")
    p.add_argument("--out", required=True, help="output audio file: .wav, .flac or .mp3")
    p.add_argument("--dump", help="also write every capture point to this .npz")
    p.add_argument("--cuda", action="store_true", help="use the CUDA execution provider when present")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"acestep-ort: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
