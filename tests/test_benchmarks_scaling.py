"""Real-size speed: torch vs py_ort per graph at 10 s, 30 s and 120 s of latent, and the DiT step's roofline.

Benchmark-only (``pytest --benchmark-only -k scaling``). The checkpoint is the ``wide`` synthetic preset (real widths
and heads, two layers per stack; ``ACESTEP_BENCH_PRESET=tiny|wide|full`` picks another), built and exported into
the cache on first use (a few minutes on 2 cores). Each measurement is a ratio taken in one run on one machine;
no time is asserted. The table is printed at the end, stored in the benchmark JSON (``extra_info``) and drawn as a
PNG (time vs T per backend) into the HTML report.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time

import numpy as np
import pytest

SECONDS = (10, 30, 120)
FRAMES_PER_SECOND = 25  # 48 kHz / 1920
ENC_LEN = 300  # condition-encoder output length: text + lyrics + timbre tokens of a typical request
_ROWS: list[dict] = []


@pytest.fixture(scope="module")
def wide():
    """(checkpoint dir, onnx dir, dit config) of the benchmark preset, built and exported once."""
    pytest.importorskip("torch", reason="the reference needs the reference extras")
    from acestep_parity import paths
    from acestep_parity.checkpoint import checkpoint_id, file_hashes, read_json
    from exporters.export import ensure_artifacts

    preset = os.environ.get("ACESTEP_BENCH_PRESET", "wide")
    ckpt = paths.ensure_synthetic_checkpoint(preset)
    hashes = file_hashes(ckpt)
    onnx = ensure_artifacts(ckpt, checkpoint_id(ckpt, hashes), hashes)
    return ckpt, onnx, read_json(ckpt / "acestep-v15-turbo" / "config.json")


@pytest.fixture(scope="module")
def engines(wide):
    from runtimes.py_ort import load_engine as load_ort
    from runtimes.torch_ref import load_engine as load_torch

    return {"torch": load_torch(wide[0]), "py_ort": load_ort(wide[1])}


def dit_step_flops(cfg: dict, frames: int, enc_len: int = ENC_LEN, batch: int = 1) -> float:
    """Multiply-add FLOPs (2 per MAC) of one DiT evaluation: per layer self-attention (projections, scores and
    weighted sum; sliding layers see at most 2*window+1 keys), cross-attention over ``enc_len`` tokens and the
    gated MLP, on ``frames / patch`` tokens; the patch in/out projections. Norms, RoPE and softmax are ignored
    (they are not SGEMM work)."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    patch = cfg.get("patch_size", 2)
    tokens = -(-frames // patch)
    layers = cfg["num_hidden_layers"]
    types = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    window = cfg.get("sliding_window", 128)
    macs = 0
    for kind in types[:layers]:
        keys = tokens if kind == "full_attention" else min(tokens, 2 * window + 1)
        macs += tokens * hidden * (heads + 2 * kv) * hd + tokens * heads * hd * hidden  # self q,k,v,o
        macs += 2 * tokens * keys * heads * hd  # scores + weighted sum
        macs += tokens * hidden * heads * hd * 2 + enc_len * hidden * kv * hd * 2  # cross q,o and k,v
        macs += 2 * tokens * enc_len * heads * hd
        macs += 3 * tokens * hidden * inter  # gate, up, down
    in_ch = cfg.get("in_channels", 192)
    macs += tokens * patch * in_ch * hidden + tokens * hidden * patch * 64
    return 2.0 * macs * batch


def sgemm_rates(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n x n float32 matmul: numpy (its BLAS) and ONNX Runtime's MatMul (MLAS), best of
    ``repeats``, measured now (the roofline's denominator)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    flops = 2.0 * n ** 3
    rates = {}
    for name, call in (("numpy", lambda: a @ b), ("ort", lambda: session.run(None, {"a": a, "b": b}))):
        call()
        best = min(_timed(call) for _ in range(repeats))
        rates[name] = flops / best / 1e9
    return rates


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _dit_inputs(cfg: dict, frames: int) -> tuple:
    rng = np.random.default_rng(frames)
    xt = rng.standard_normal((1, frames, 64)).astype(np.float32)
    t = np.full((1,), 0.5, dtype=np.float32)
    enc = rng.standard_normal((1, ENC_LEN, cfg["hidden_size"])).astype(np.float32)
    ctx = rng.standard_normal((1, frames, 128)).astype(np.float32)
    return xt, t, enc, ctx


@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s}s" for s in SECONDS])
@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
def test_benchmark_scaling_dit_step(benchmark, engines, wide, backend_name, seconds):
    cfg = wide[2]
    frames = seconds * FRAMES_PER_SECOND
    inputs = _dit_inputs(cfg, frames)
    engine = engines[backend_name]
    engine.dit(*inputs)  # warm-up
    benchmark.group = f"scaling_dit_step_{seconds}s"
    benchmark.pedantic(lambda: engine.dit(*inputs), rounds=3, iterations=1)
    flops = dit_step_flops(cfg, frames)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({"backend": backend_name, "frames": frames, "gflop": flops / 1e9,
                                 "achieved_gflops": flops / mean / 1e9})
    _ROWS.append({"graph": "dit_step", "backend": backend_name, "seconds": seconds, "frames": frames,
                  "mean_s": mean, "gflop": flops / 1e9})


@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s}s" for s in SECONDS])
def test_benchmark_scaling_vae(benchmark, engines, seconds):
    """py_ort's VAE at T frames: upstream's tiling against the budget chunk, same run (torch's one 256-frame tile is
    timed by test_benchmark_scaling_vae_tile)."""
    from acestep_parity.host import tiling

    engine = engines["py_ort"]
    frames = seconds * FRAMES_PER_SECOND
    latents = np.random.default_rng(frames).standard_normal((1, 64, frames)).astype(np.float32)
    times = {}
    for mode, chunk in (("upstream", tiling.CPU_CHUNK_SIZE), ("budget", engine.vae_chunk)):
        times[mode] = _timed(lambda c=chunk: tiling.tiled_decode(latents, engine.decode_latents, c))
    benchmark.group = f"scaling_vae_{seconds}s"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update({"frames": frames, "chunk": engine.vae_chunk, **{f"{k}_s": v for k, v in times.items()}})
    for mode, value in times.items():
        _ROWS.append({"graph": f"vae_{mode}", "backend": "py_ort", "seconds": seconds, "frames": frames,
                      "mean_s": value})


@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
def test_benchmark_scaling_vae_tile(benchmark, engines, backend_name):
    """One upstream VAE tile (256 frames) per backend."""
    latents = np.random.default_rng(256).standard_normal((1, 64, 256)).astype(np.float32)
    engine = engines[backend_name]
    benchmark.group = "scaling_vae_tile_256"
    benchmark.pedantic(lambda: engine.decode_latents(latents), rounds=1, iterations=1)
    _ROWS.append({"graph": "vae_tile_256", "backend": backend_name, "seconds": 256 / FRAMES_PER_SECOND,
                  "frames": 256, "mean_s": benchmark.stats.stats.mean})


def test_benchmark_scaling_summary(benchmark, wide, extras, record_property):
    """Roofline and sizes; the table (printed, JSON) and the time-vs-T plot (HTML report)."""
    rates = sgemm_rates()
    benchmark.group = "scaling_summary"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    sizes = {p.name: p.stat().st_size for p in sorted(wide[1].glob("*.onnx*"))}
    best = max(rates.values())
    lines = [f"SGEMM (2048^3 fp32): numpy {rates['numpy']:.0f} GFLOP/s, ONNX Runtime {rates['ort']:.0f} GFLOP/s"]
    dit = {(r["backend"], r["seconds"]): r for r in _ROWS if r["graph"] == "dit_step"}
    for seconds in SECONDS:
        torch_row, ort_row = dit.get(("torch", seconds)), dit.get(("py_ort", seconds))
        if not (torch_row and ort_row):
            continue
        roof = ort_row["gflop"] / best
        lines.append(f"DiT step {seconds:4d} s (T={ort_row['frames']}): {ort_row['gflop']:.1f} GFLOP; torch "
                     f"{torch_row['mean_s']:.3f} s, py_ort {ort_row['mean_s']:.3f} s (py_ort/torch "
                     f"{ort_row['mean_s'] / torch_row['mean_s']:.2f}); roofline {roof:.3f} s -> py_ort at "
                     f"{roof / ort_row['mean_s']:.0%} of the machine's SGEMM rate")
    for r in _ROWS:
        if r["graph"] != "dit_step":
            lines.append(f"{r['graph']:14s} {r['backend']:7s} T={r['frames']:5d}: {r['mean_s']:.2f} s")
    lines.append("artifact sizes: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))
    benchmark.extra_info.update({"sgemm_gflops": rates, "rows": _ROWS, "artifact_bytes": sizes})
    record_property("scaling_table", json.dumps({"sgemm_gflops": rates, "rows": _ROWS, "artifact_bytes": sizes}))
    print("\n" + "\n".join(lines))
    png = _plot()
    if png is not None:
        import pytest_html

        extras.append(pytest_html.extras.png(base64.b64encode(png).decode("ascii"), "time vs T per backend"))


def _plot() -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for r in _ROWS:
        if r["graph"] in ("dit_step", "vae_upstream", "vae_budget"):
            series.setdefault(f"{r['graph']} {r['backend']}", []).append((r["frames"], r["mean_s"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(series.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent frames T (25 per second)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
