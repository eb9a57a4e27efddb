"""Op-level profile of the VAE decode and one DiT step: time, FLOPs and GFLOP/s per op type (issue 18.1).

    python scripts/op_profile.py --onnx-dir DIR [--seconds 10 --seconds 30 --seconds 120] [--graph vae_decoder]
        [--threads 0] [--out reports/op_profile.json]

DIR is an exported fp32 folder at real width: the wide preset (`acestep-parity synth --preset wide`, then
`acestep-export`) or the full one (its DiT has 24 layers instead of 2; the per-layer rows are the same). Each
(graph, length) is profiled by ONNX Runtime's own profiler on random inputs, with the runtimes' session options
(:mod:`acestep_parity.op_profile`). The VAE runs one call of the length the runtimes would give it: the whole
latent, or the budget chunk (``ACESTEP_VAE_MEMORY_MB``) when the song is longer. The SGEMM rate (2048^3 fp32,
ORT's MLAS) is measured in the same run. Prints Markdown tables (docs/performance.md) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from acestep_ort.host.tiling import VaeChunking, VaeShape
from acestep_parity.op_profile import profile_graph, table_lines
from acestep_parity.roofline import ENC_LEN, sgemm_rates

FRAMES_PER_SECOND = 25


def dit_feeds(hidden: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(frames)
    t = np.full((1,), 0.5, dtype=np.float32)
    return {"hidden_states": rng.standard_normal((1, frames, 64)).astype(np.float32), "timestep": t,
            "timestep_r": t.copy(),
            "encoder_hidden_states": rng.standard_normal((1, ENC_LEN, hidden)).astype(np.float32),
            "context_latents": rng.standard_normal((1, frames, 128)).astype(np.float32)}


def vae_feeds(frames: int) -> dict[str, np.ndarray]:
    return {"latents": np.random.default_rng(frames).standard_normal((1, 64, frames)).astype(np.float32)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-dir", required=True, type=Path)
    parser.add_argument("--seconds", type=int, action="append")
    parser.add_argument("--graph", action="append", choices=("vae_decoder", "dit_decoder"))
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's default, all cores)")
    parser.add_argument("--out", type=Path, default=Path("reports/op_profile.json"))
    args = parser.parse_args(argv)
    manifest_path = args.onnx_dir / "manifest.json"
    if not manifest_path.is_file():
        print(f"error: {manifest_path} not found: --onnx-dir must be an exported folder (acestep-export)",
              file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    hidden = int(manifest.get("config_dims", {}).get("H", 0)) or _enc_width(args.onnx_dir)
    vae_shape = VaeShape.from_config(manifest["vae_shape"]) if "vae_shape" in manifest else VaeShape()
    chunk = VaeChunking.from_env().chunk_size(vae_shape)
    seconds = args.seconds or [10, 30, 120]
    graphs = args.graph or ["vae_decoder", "dit_decoder"]
    rates = sgemm_rates()
    print(f"SGEMM 2048^3: ORT {rates['ort']:.0f} GFLOP/s, numpy {rates['numpy']:.0f} GFLOP/s")
    results = {"sgemm_gflops": rates, "threads": args.threads, "profiles": []}
    done: set[tuple[str, int]] = set()
    for graph in graphs:
        for sec in seconds:
            frames = sec * FRAMES_PER_SECOND
            if graph == "vae_decoder":
                frames = min(frames, chunk)
            if (graph, frames) in done:
                continue
            done.add((graph, frames))
            feeds = vae_feeds(frames) if graph == "vae_decoder" else dit_feeds(hidden, frames)
            profile = profile_graph(args.onnx_dir / f"{graph}.onnx", feeds, threads=args.threads)
            label = f"{graph} T = {frames}" + (f" ({sec} s)" if frames == sec * FRAMES_PER_SECOND else
                                              f" (the budget chunk of a {sec} s song)")
            print(f"\n### {label}\n")
            print("\n".join(table_lines(profile, rates["ort"])))
            results["profiles"].append({
                "graph": graph, "frames": frames, "seconds": sec, "wall_seconds": profile.wall_seconds,
                "rows": [vars(r) | {"gflops_per_s": r.gflops_per_s} for r in profile.sorted_rows()]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


def _enc_width(onnx_dir: Path) -> int:
    """The DiT's encoder width from the graph's declared input (a manifest without ``config_dims``)."""
    import onnx

    model = onnx.load(str(onnx_dir / "dit_decoder.onnx"), load_external_data=False)
    for value in model.graph.input:
        if value.name == "encoder_hidden_states":
            return int(value.type.tensor_type.shape.dim[2].dim_value)
    raise SystemExit("dit_decoder.onnx declares no encoder_hidden_states input")


if __name__ == "__main__":
    sys.exit(main())
