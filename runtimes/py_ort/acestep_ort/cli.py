"""``acestep-ort generate``: text2music and simple mode (the 5 Hz LM planner, then text2music) on ONNX Runtime
with nothing but onnxruntime, numpy, tokenizers, soundfile.

    acestep-ort generate --case cases/text2music_01.json [--onnx-dir DIR] --out out.wav [--dump captures.npz]

Without ``--onnx-dir`` the folder is found as the Rust ``generate`` finds it (:func:`find_onnx_dir`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def find_onnx_dir(explicit: str | None) -> Path:
    """``--onnx-dir``, else ``$ACESTEP_ONNX_DIR``, else the newest ``<cache>/artifacts/<checkpoint id>/fp32``
    holding a manifest, ``<cache>`` being ``$ACESTEP_PARITY_CACHE`` or ``.cache`` in the working directory or a
    parent (what ``make run`` and the test suite export) — the Rust ``generate``'s rule."""
    import os

    if explicit:
        return Path(explicit)
    if os.environ.get("ACESTEP_ONNX_DIR"):
        return Path(os.environ["ACESTEP_ONNX_DIR"])
    cwd = Path.cwd()
    caches = ([Path(os.environ["ACESTEP_PARITY_CACHE"])] if os.environ.get("ACESTEP_PARITY_CACHE")
              else [d / ".cache" for d in (cwd, *cwd.parents)])
    for cache in caches:
        found = sorted((m.stat().st_mtime, m.parent) for m in (cache / "artifacts").glob("*/fp32/manifest.json"))
        if found:
            print(f"using the exported ONNX folder {found[-1][1]} (pass --onnx-dir to choose another)", file=sys.stderr)
            return found[-1][1]
    raise ValueError("no ONNX folder: pass --onnx-dir DIR or set ACESTEP_ONNX_DIR (export one with `acestep-export "
                     "--out DIR`, or run `make run`, which exports into .cache/artifacts/<checkpoint id>/fp32)")


def cmd_generate(args: argparse.Namespace) -> int:
    from acestep_ort.host.assets import onnx_folder_hint
    from acestep_ort.host.audio import save_audio
    from acestep_ort.host.case import resolve_case
    from acestep_ort.host.progress import stderr_progress
    from acestep_ort.pipeline import load_engine
    from acestep_ort.session_manager import SessionConfig

    case = resolve_case(args.case, Path(args.cases_dir))
    onnx_dir = find_onnx_dir(args.onnx_dir)
    if not onnx_dir.is_dir():
        raise ValueError(f"ONNX folder {onnx_dir} does not exist (export one with `acestep-export --out {onnx_dir}`; "
                         "`make run` and the test suite export into .cache/artifacts/<checkpoint id>/fp32)"
                         + onnx_folder_hint(Path.cwd()))
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if args.cuda else ("CPUExecutionProvider",)
    start = time.perf_counter()
    engine = load_engine(onnx_dir, SessionConfig(providers=providers))
    load_s = time.perf_counter() - start
    progress = None if args.quiet else stderr_progress()
    if case.task == "simple_mode":  # the planner (lm_prefill / lm_decode), then text2music on its request
        caps = engine.generate_simple(case, progress=progress)
    else:
        caps = engine.generate(case.request(), progress=progress)
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
    parser = argparse.ArgumentParser(prog="acestep-ort", description="ACE-Step 1.5 text2music and simple mode on ONNX Runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="generate audio for a case file")
    p.add_argument("--case", required=True, help="case JSON (cases/text2music_01.json), or a case id in --cases-dir")
    p.add_argument("--cases-dir", default="cases", help="folder that --case ids are looked up in (default: cases)")
    p.add_argument("--onnx-dir", help="folder with the exported graphs, manifest and assets (default: "
                   "$ACESTEP_ONNX_DIR, else the newest .cache/artifacts/<checkpoint id>/fp32 here or above)")
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
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"acestep-ort: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
