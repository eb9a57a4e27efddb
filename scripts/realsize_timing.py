"""Time and memory of one text2music song per backend and profile, each in a fresh process, against the roofline.

    python scripts/realsize_timing.py --checkpoint-dir DIR [--seconds 30] [--backend torch --backend py_ort ...]
        [--profile fp32 --profile int8_dynamic] [--out reports/realsize/timing.json]

Each (backend, profile) runs the case in a child process of its own (``acestep_parity.backends.isolated``), one
after another, so the peak RSS is that backend's alone. The SGEMM rate (numpy and ONNX Runtime, 2048^3 fp32) is
measured in this run; each stage's floor is its FLOPs (``acestep_parity.roofline``) over ONNX Runtime's rate.
Prints a Markdown table (docs/realsize.md) and writes the figures as JSON. Opt-in: minutes per backend at real size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from acestep_ort.host.case import load_case
from acestep_parity import paths
from acestep_parity.backends import REGISTRY, BackendContext
from acestep_parity.backends.isolated import IsolatedBackend
from acestep_parity.checkpoint import DIT_DIR, VAE_DIR, checkpoint_id, file_hashes, read_json
from acestep_parity.roofline import dit_step_flops, sgemm_rates, vae_decode_flops

TEXT2MUSIC_GRAPHS = ("text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder")


def song_case(folder: Path, seconds: float) -> Path:
    """text2music_01 (caption and lyrics) at ``seconds`` of audio."""
    case = json.loads((paths.CASES_DIR / "text2music_01.json").read_text(encoding="utf-8"))
    case.update(id=f"song_{int(seconds)}s", duration=seconds, description=f"text2music_01 at {seconds} s")
    path = folder / f"song_{int(seconds)}s.json"
    path.write_text(json.dumps(case), encoding="utf-8")
    return path


def loaded_bytes(backend, checkpoint: Path) -> int:
    """The weights a backend loads for text2music: the checkpoint's files for torch (the LM excluded), the
    five graphs' files for the ONNX runtimes."""
    if backend.name == "torch":
        from acestep_parity.exporters.export import checkpoint_bytes

        return checkpoint_bytes(checkpoint)
    manifest = json.loads((backend.inner.onnx_dir / "manifest.json").read_text(encoding="utf-8"))
    return sum(f["bytes"] for name in TEXT2MUSIC_GRAPHS for f in manifest["graphs"][name]["files"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backend", action="append", choices=("torch", "py_ort", "rust", "dll"))
    parser.add_argument("--profile", action="append", choices=("fp32", "fp16", "int8_dynamic", "int8_static"))
    parser.add_argument("--out", default="reports/realsize/timing.json")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint_dir).resolve()
    cid = checkpoint_id(checkpoint, file_hashes(checkpoint))
    dit_cfg, vae_cfg = read_json(checkpoint / DIT_DIR / "config.json"), read_json(checkpoint / VAE_DIR / "config.json")
    rates = sgemm_rates()
    print(f"SGEMM 2048^3 fp32: numpy {rates['numpy']:.0f} GFLOP/s, ONNX Runtime {rates['ort']:.0f} GFLOP/s",
          file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        case = load_case(song_case(Path(tmp), args.seconds))
        frames = int(round(args.seconds * 25))
        steps = 8
        flops = {"dit": dit_step_flops(dit_cfg, frames) * steps, "vae": vae_decode_flops(vae_cfg, frames)}
        for name in args.backend or ["torch", "py_ort", "rust"]:
            for profile in args.profile or ["fp32"]:
                if name == "torch" and profile != "fp32":
                    continue
                ctx = BackendContext(checkpoint, cid, profile, paths.cache_dir())
                backend = IsolatedBackend(REGISTRY[name], ctx, lambda _b: ([case], [], []))
                available = backend.availability()
                if not available.ok:
                    print(f"{name} ({profile}): unavailable: {available.reason}", file=sys.stderr)
                    continue
                print(f"{name} ({profile}): running {case.id} in a fresh process ...", file=sys.stderr, flush=True)
                run = backend.run_case(case)
                t = run.timings
                row = {"backend": name, "profile": profile, "seconds_audio": args.seconds, "frames": frames,
                       "text_s": sum(t.get(k, 0.0) for k in ("tokenize", "text_encoder", "lyric_embedding",
                                                              "condition_encoder")),
                       "dit_s": t.get("dit", 0.0), "vae_s": t.get("vae", 0.0),
                       "end_to_end_s": t.get("end_to_end", sum(t.values())),
                       "child_wall_s": backend.child_seconds[-1],
                       "peak_rss_bytes": max(backend.peak_rss_bytes or 0, backend.peak_rss_children_bytes or 0),
                       "weights_bytes": loaded_bytes(backend, checkpoint), "timings": t}
                row["dit_vs_roofline"] = row["dit_s"] / (flops["dit"] / (rates["ort"] * 1e9))
                row["vae_vs_roofline"] = row["vae_s"] / (flops["vae"] / (rates["ort"] * 1e9))
                rows.append(row)
                print(f"  {row['end_to_end_s']:.1f} s (text {row['text_s']:.1f}, DiT {row['dit_s']:.1f} = "
                      f"{row['dit_vs_roofline']:.2f}x floor, VAE {row['vae_s']:.1f} = {row['vae_vs_roofline']:.2f}x "
                      f"floor), peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB for {row['weights_bytes'] / 1e9:.2f} GB "
                      "of weights", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint_id": cid, "sgemm_gflops": rates, "flops": flops, "rows": rows}, indent=1),
                   encoding="utf-8")
    print("| backend | profile | text | DiT (8 steps) | VAE | end to end | DiT / floor | VAE / floor | peak RSS | "
          "weights loaded |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['profile']} | {r['text_s']:.1f} s | {r['dit_s']:.1f} s | {r['vae_s']:.1f} s | "
              f"{r['end_to_end_s']:.1f} s | {r['dit_vs_roofline']:.2f}x | {r['vae_vs_roofline']:.2f}x | "
              f"{r['peak_rss_bytes'] / 1e9:.2f} GB | {r['weights_bytes'] / 1e9:.2f} GB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
