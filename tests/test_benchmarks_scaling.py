"""Real-size speed and memory: torch vs py_ort vs rust, per profile, at 10 s, 30 s and 120 s of latent; the DiT
step against the roofline.

Benchmark-only (``pytest --benchmark-only -k scaling``). The checkpoint is the ``wide`` synthetic preset (real widths
and heads, two layers per stack; ``ACESTEP_BENCH_PRESET=tiny|wide|full`` picks another), built and exported into
the cache on first use (a few minutes on 2 cores); the lighter profiles are derived from that export on first use
(``ensure_profile``, which also measures their accuracy against fp32 into their manifest). Each measurement is a
ratio taken in one run on one machine; no time is asserted. The table is printed at the end, stored in the
benchmark JSON (``extra_info``) and drawn as a PNG (time vs T per backend and profile) into the HTML report.

- ``dit_step``: one DiT evaluation per runner (torch; py_ort and rust on fp32; py_ort on each profile);
- ``vae``: py_ort's VAE with upstream's tiling against the budget chunk; ``vae_tile``: one 256-frame tile;
- ``end_to_end``: a whole text2music run in a fresh process per backend and profile (its wall time and peak RSS).
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
    from acestep_parity.exporters.export import ensure_artifacts

    preset = os.environ.get("ACESTEP_BENCH_PRESET", "wide")
    ckpt = paths.ensure_synthetic_checkpoint(preset)
    hashes = file_hashes(ckpt)
    onnx = ensure_artifacts(ckpt, checkpoint_id(ckpt, hashes), hashes)
    return ckpt, onnx, read_json(ckpt / "acestep-v15-turbo" / "config.json")


PROFILES = ("fp16", "int8_dynamic", "int8_static")
# who runs one DiT step: "<backend>" on fp32 or "<backend>-<profile>" (ids read well under -k "dit and int8_dynamic")
DIT_RUNNERS = ("torch", "py_ort", "rust", *(f"py_ort-{p}" for p in PROFILES))
# fresh-process runs (wall time, peak RSS): the reference, and both ONNX runtimes on every profile
E2E_RUNNERS = ("torch", *(f"{b}-{p}" for b in ("py_ort", "rust") for p in ("fp32", *PROFILES)))
E2E_SECONDS = (10, 30)  # torch decodes 120 s in 24 VAE tiles (minutes each at real width): end to end stops at 30 s


@pytest.fixture(scope="module")
def profile_dir(wide):
    """``profile_dir(name)``: the wide export's folder for a profile (fp32, or derived once and cached)."""
    from acestep_parity.exporters.profiles.derive import ensure_profile

    cache = {"fp32": wide[1]}

    def get(profile: str):
        if profile not in cache:
            cache[profile] = ensure_profile(wide[1], profile)
        return cache[profile]

    return get


class _RustDit:
    """The Rust runtime's DiT step through ``generate serve``; ``seconds`` are the binary's own timing of the
    DiT call (no file I/O)."""

    def __init__(self, onnx_dir):
        from acestep_parity.backends.rust import DitServer, find_binary, rust_env

        binary = find_binary()
        if binary is None or not rust_env().get("ORT_DYLIB_PATH"):
            pytest.skip("the Rust runtime is not built (cargo build --release, or make test)")
        self.server = DitServer(binary, onnx_dir)
        self.seconds: list[float] = []

    def dit(self, *inputs):
        out = self.server.step(*inputs)
        self.seconds.append(float(self.server.last_dit_seconds))
        return out


@pytest.fixture(scope="module")
def engines(wide, profile_dir):
    """``engines(runner)``: the engine of a DiT runner, opened on first use and kept for the module."""
    cache: dict[str, object] = {}

    def get(runner: str):
        if runner not in cache:
            backend, _, profile = runner.partition("-")
            if backend == "torch":
                from acestep_parity.torch_ref import load_engine as load_torch

                cache[runner] = load_torch(wide[0])
            elif backend == "rust":
                cache[runner] = _RustDit(profile_dir(profile or "fp32"))
            else:
                from acestep_ort import load_engine as load_ort

                cache[runner] = load_ort(profile_dir(profile or "fp32"))
        return cache[runner]

    yield get
    for engine in cache.values():
        if isinstance(engine, _RustDit):
            engine.server.close()


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
@pytest.mark.parametrize("runner", DIT_RUNNERS)
def test_benchmark_scaling_dit_step(benchmark, engines, wide, runner, seconds):
    cfg = wide[2]
    frames = seconds * FRAMES_PER_SECOND
    inputs = _dit_inputs(cfg, frames)
    engine = engines(runner)
    engine.dit(*inputs)  # warm-up
    benchmark.group = f"scaling_dit_step_{seconds}s"
    benchmark.pedantic(lambda: engine.dit(*inputs), rounds=3, iterations=1)
    flops = dit_step_flops(cfg, frames)
    mean = benchmark.stats.stats.mean
    if isinstance(engine, _RustDit):  # the binary's timing of the DiT call, not the npz round trip
        mean = float(np.mean(engine.seconds[-3:]))
    backend, _, profile = runner.partition("-")
    benchmark.extra_info.update({"backend": backend, "profile": profile or "fp32", "frames": frames,
                                 "gflop": flops / 1e9, "mean_s": mean, "achieved_gflops": flops / mean / 1e9})
    _ROWS.append({"graph": "dit_step", "backend": runner, "seconds": seconds, "frames": frames,
                  "mean_s": mean, "gflop": flops / 1e9})


@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s}s" for s in SECONDS])
def test_benchmark_scaling_vae(benchmark, engines, seconds):
    """py_ort's VAE at T frames: upstream's tiling against the budget chunk, same run (torch's one 256-frame tile is
    timed by test_benchmark_scaling_vae_tile)."""
    from acestep_ort.host import tiling

    engine = engines("py_ort")
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


@pytest.mark.parametrize("runner", ["torch", "py_ort", "py_ort-fp16"])
def test_benchmark_scaling_vae_tile(benchmark, engines, runner):
    """One upstream VAE tile (256 frames) per backend, and fp16's VAE (the only profile that changes the VAE)."""
    latents = np.random.default_rng(256).standard_normal((1, 64, 256)).astype(np.float32)
    engine = engines(runner)
    engine.decode_latents(latents[:, :, :64])  # warm-up on a short window
    benchmark.group = "scaling_vae_tile_256"
    benchmark.pedantic(lambda: engine.decode_latents(latents), rounds=1, iterations=1)
    _ROWS.append({"graph": "vae_tile_256", "backend": runner, "seconds": 256 / FRAMES_PER_SECOND,
                  "frames": 256, "mean_s": benchmark.stats.stats.mean})


# One text2music run in this fresh process: its load and generate times and its peak RSS (VmHWM: ru_maxrss would
# include the forking parent's RSS, which survives exec).
_E2E_SCRIPT = """
import json, sys, time
from pathlib import Path
from acestep_ort.host.case import load_case
backend, target, case = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if backend == "torch":
    from acestep_parity.torch_ref import load_engine
else:
    from acestep_ort import load_engine
start = time.perf_counter()
engine = load_engine(target)
loaded = time.perf_counter()
engine.generate(load_case(case).request())
done = time.perf_counter()
hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")]
print(json.dumps({"load_s": loaded - start, "generate_s": done - loaded, "peak_rss_mb": int(hwm[0].split()[1]) / 1024}))
"""


def _scaled_case(tmp_dir, seconds: int):
    """text2music_01 (all metadata, English lyrics, one seed) at ``seconds`` of audio."""
    from acestep_parity import paths

    data = json.loads((paths.CASES_DIR / "text2music_01.json").read_text(encoding="utf-8"))
    data.update(id=f"scaling_{seconds}s", duration=float(seconds))
    path = tmp_dir / f"scaling_{seconds}s.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("seconds", E2E_SECONDS, ids=[f"{s}s" for s in E2E_SECONDS])
@pytest.mark.parametrize("runner", E2E_RUNNERS)
def test_benchmark_scaling_end_to_end(benchmark, wide, profile_dir, tmp_path, runner, seconds):
    """One whole run per backend and profile in a fresh process, one at a time: wall time and peak RSS."""
    import subprocess
    import sys

    from acestep_parity import paths

    backend, _, profile = runner.partition("-")
    case = _scaled_case(tmp_path, seconds)
    if backend == "rust":
        from acestep_parity.backends.rust import find_binary, run_generate, rust_env

        binary = find_binary()
        if binary is None or not rust_env().get("ORT_DYLIB_PATH"):
            pytest.skip("the Rust runtime is not built (cargo build --release, or make test)")
        target = profile_dir(profile)

        def run():
            _, info = run_generate(binary, case, target, tmp_path)
            return info
    else:
        target = wide[0] if backend == "torch" else profile_dir(profile)

        def run():
            proc = subprocess.run([sys.executable, "-c", _E2E_SCRIPT, backend, str(target), str(case)],
                                  cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"{runner}: {proc.stderr.strip()[-3000:]}")
            return json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.group = f"scaling_end_to_end_{seconds}s"
    info = benchmark.pedantic(run, rounds=1, iterations=1)
    row = {"graph": "end_to_end", "backend": runner, "seconds": seconds, "frames": seconds * FRAMES_PER_SECOND,
           "mean_s": float(info["generate_s"]), "load_s": float(info["load_s"]),
           "peak_rss_mb": info.get("peak_rss_mb")}
    benchmark.extra_info.update(row)
    _ROWS.append(row)


def _against_torch(graph: str, lengths, runners):
    """(seconds, runner, row, ", / torch R" or "") for every measured row of ``graph``, in table order."""
    rows = {(r["backend"], r["seconds"]): r for r in _ROWS if r["graph"] == graph}
    for seconds in lengths:
        reference = rows.get(("torch", seconds))
        for runner in runners:
            row = rows.get((runner, seconds))
            if row is not None:
                ratio = f", / torch {row['mean_s'] / reference['mean_s']:.2f}" if reference else ""
                yield seconds, runner, row, ratio


def test_benchmark_scaling_summary(benchmark, wide, profile_dir, extras, record_property):
    """Roofline, end-to-end ratios, peak RSS and sizes; the table (printed, JSON) and the time-vs-T plot (HTML)."""
    if not _ROWS:  # the rows are this process's scaling benchmarks, which run before it in file order
        pytest.skip("no scaling benchmark ran in this process before the summary: select the whole file "
                    "(pytest --benchmark-only -k scaling), without -n")
    assert all(r["mean_s"] > 0 and r["frames"] > 0 for r in _ROWS), [r for r in _ROWS if not r["mean_s"] > 0]
    rates = sgemm_rates()
    assert all(rate > 0 for rate in rates.values()), rates
    benchmark.group = "scaling_summary"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    sizes = {}
    for profile in ("fp32", *PROFILES):
        folder = wide[1] if profile == "fp32" else wide[1].parent / profile
        if folder.is_dir():
            sizes[profile] = {p.name: p.stat().st_size for p in sorted(folder.glob("*.onnx*"))}
    best = max(rates.values())
    lines = [f"SGEMM (2048^3 fp32): numpy {rates['numpy']:.0f} GFLOP/s, ONNX Runtime {rates['ort']:.0f} GFLOP/s "
             f"(roofline = the DiT step's FLOPs / {best:.0f} GFLOP/s)"]
    for seconds, runner, row, ratio in _against_torch("dit_step", SECONDS, DIT_RUNNERS):
        roof = row["gflop"] / best
        lines.append(f"DiT step {seconds:4d} s (T={row['frames']}, {row['gflop']:.1f} GFLOP) {runner:20s} "
                     f"{row['mean_s']:.3f} s{ratio}; roofline {roof:.3f} s = {roof / row['mean_s']:.0%}")
    for seconds, runner, row, ratio in _against_torch("end_to_end", E2E_SECONDS, E2E_RUNNERS):
        peak = f"{row['peak_rss_mb']:.0f} MB" if row.get("peak_rss_mb") else "n/a"
        lines.append(f"end to end {seconds:3d} s {runner:20s} generate {row['mean_s']:.2f} s{ratio} "
                     f"(load {row['load_s']:.1f} s), peak RSS {peak}")
    for r in _ROWS:
        if r["graph"] not in ("dit_step", "end_to_end"):
            lines.append(f"{r['graph']:14s} {r['backend']:12s} T={r['frames']:5d}: {r['mean_s']:.2f} s")
    for profile, files in sizes.items():
        lines.append(f"artifact sizes {profile}: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in files.items()))
    benchmark.extra_info.update({"sgemm_gflops": rates, "rows": _ROWS, "artifact_bytes": sizes})
    record_property("scaling_table", json.dumps({"sgemm_gflops": rates, "rows": _ROWS, "artifact_bytes": sizes}))
    print("\n" + "\n".join(lines))
    png = _plot()
    if png is not None:
        import pytest_html

        extras.append(pytest_html.extras.png(base64.b64encode(png).decode("ascii"), "time vs T per backend"))


def _plot() -> bytes | None:
    """Two log-log panels: the DiT step per runner, and the VAE and end-to-end runs per backend and profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list[tuple[int, float]]]] = {"DiT step": {}, "VAE and end to end": {}}
    for r in _ROWS:
        if r["graph"] == "dit_step":
            panels["DiT step"].setdefault(r["backend"], []).append((r["frames"], r["mean_s"]))
        elif r["graph"] in ("vae_upstream", "vae_budget", "end_to_end"):
            panels["VAE and end to end"].setdefault(f"{r['graph']} {r['backend']}", []).append(
                (r["frames"], r["mean_s"]))
    if not any(panels.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for name, points in sorted(series.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("latent frames T (25 per second)")
        ax.set_ylabel("seconds")
        if series:
            ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
