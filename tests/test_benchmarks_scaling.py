"""Real-size speed and memory: torch vs py_ort vs rust, per profile, at 10, 30, 120 and 240 s of latent; the DiT
step, the VAE and whole songs against torch and against the fp32 roofline (``acestep_parity.roofline``).

Benchmark-only and marked ``long`` (about an hour on 2 cores; deselected unless asked for:
``pytest --benchmark-only -m long -k scaling``). The checkpoint is the ``wide`` synthetic preset (real widths
and heads, two layers per stack; ``ACESTEP_BENCH_PRESET=tiny|wide|full`` picks another), built and exported into
the cache on first use (a few minutes on 2 cores); the lighter profiles are derived from that export on first use
(``ensure_profile``, which also measures their accuracy against fp32 into their manifest). Each measurement is a
ratio taken in one run on one machine (time / torch's time: < 1 is faster); no time is asserted. The table is printed at the end, stored in the
benchmark JSON (``extra_info``) and drawn as a PNG (time vs T per backend and profile) into the HTML report.

- ``dit_step``: one DiT evaluation per runner (torch; py_ort and rust on fp32; py_ort on each profile);
- ``vae``: py_ort's VAE on the budget chunk (against the roofline), and with upstream's tiling up to 120 s;
  ``vae_tile``: one 256-frame tile;
- ``end_to_end``: a whole text2music run in a fresh process per backend and profile (its wall time, its DiT and
  VAE stages, peak RSS); beyond 30 s the fp32 runs of py_ort and rust only (``scaling_report.E2E_LONG_RUNNERS``).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from scaling_report import (
    DIT_RUNNERS,
    E2E_SECONDS,
    FRAMES_PER_SECOND,
    PROFILES,
    SECONDS,
    ScalingTable,
    e2e_runners,
    scaling_table,
    summary_lines,
)

from acestep_parity.roofline import ENC_LEN, dit_step_flops, sgemm_rates, vae_decode_flops

E2E_PAIRS = [(runner, seconds) for seconds in E2E_SECONDS for runner in e2e_runners(seconds)]
UPSTREAM_TILING_UP_TO = 120  # seconds: upstream's 256-frame tiles decode a 240 s latent about twice (many minutes)


@pytest.fixture(scope="module")
def wide():
    """(checkpoint dir, onnx dir, dit config, vae config) of the benchmark preset, built and exported once."""
    pytest.importorskip("torch", reason="the reference needs the reference extras")
    from acestep_parity import paths
    from acestep_parity.checkpoint import checkpoint_id, file_hashes, read_json
    from acestep_parity.exporters.export import ensure_artifacts

    preset = os.environ.get("ACESTEP_BENCH_PRESET", "wide")
    ckpt = paths.ensure_synthetic_checkpoint(preset)
    hashes = file_hashes(ckpt)
    onnx = ensure_artifacts(ckpt, checkpoint_id(ckpt, hashes), hashes)
    return ckpt, onnx, read_json(ckpt / "acestep-v15-turbo" / "config.json"), read_json(ckpt / "vae" / "config.json")


@pytest.fixture
def scaling_rows(request) -> list[dict]:
    """This run's table rows (on the config, printed by tests/conftest.py when the run ends)."""
    return scaling_table(request.config).rows


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
    """The Rust runtime's DiT step through ``acestep-harness serve``; ``seconds`` are the binary's own timing of the
    DiT call (no file I/O)."""

    def __init__(self, onnx_dir):
        from acestep_parity.backends.rust import DitServer, find_harness, rust_env

        harness = find_harness()
        if harness is None or not rust_env().get("ORT_DYLIB_PATH"):
            pytest.skip("the Rust runtime is not built (cargo build --release, or make test)")
        self.server = DitServer(harness, onnx_dir)
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


def _dit_inputs(cfg: dict, frames: int) -> tuple:
    rng = np.random.default_rng(frames)
    xt = rng.standard_normal((1, frames, 64)).astype(np.float32)
    t = np.full((1,), 0.5, dtype=np.float32)
    enc = rng.standard_normal((1, ENC_LEN, cfg["hidden_size"])).astype(np.float32)
    ctx = rng.standard_normal((1, frames, 128)).astype(np.float32)
    return xt, t, enc, ctx


@pytest.mark.long
@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s}s" for s in SECONDS])
@pytest.mark.parametrize("runner", DIT_RUNNERS)
def test_benchmark_scaling_dit_step(benchmark, engines, wide, scaling_rows, runner, seconds):
    cfg = wide[2]
    frames = seconds * FRAMES_PER_SECOND
    inputs = _dit_inputs(cfg, frames)
    engine = engines(runner)
    engine.dit(*inputs)  # warm-up
    benchmark.group = f"scaling_dit_step_{seconds}s"
    vt = benchmark.pedantic(lambda: engine.dit(*inputs), rounds=3, iterations=1)
    assert np.shape(vt) == inputs[0].shape and np.isfinite(vt).all(), f"{runner}: vt {np.shape(vt)} or not finite"
    flops = dit_step_flops(cfg, frames)
    mean = benchmark.stats.stats.mean
    if isinstance(engine, _RustDit):  # the binary's timing of the DiT call, not the npz round trip
        mean = float(np.mean(engine.seconds[-3:]))
    backend, _, profile = runner.partition("-")
    benchmark.extra_info.update({"backend": backend, "profile": profile or "fp32", "frames": frames,
                                 "gflop": flops / 1e9, "mean_s": mean, "achieved_gflops": flops / mean / 1e9})
    scaling_rows.append({"graph": "dit_step", "backend": runner, "seconds": seconds, "frames": frames,
                  "mean_s": mean, "gflop": flops / 1e9})


@pytest.mark.long
@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s}s" for s in SECONDS])
def test_benchmark_scaling_vae(benchmark, engines, wide, scaling_rows, seconds):
    """py_ort's VAE at T frames: the budget chunk (the benchmark, against the roofline of T frames) and, up to
    120 s, upstream's tiling (timed once, same run); both give the same number of samples (torch's one 256-frame
    tile is timed by test_benchmark_scaling_vae_tile)."""
    from acestep_ort.host import tiling

    engine = engines("py_ort")
    frames = seconds * FRAMES_PER_SECOND
    latents = np.random.default_rng(frames).standard_normal((1, 64, frames)).astype(np.float32)
    times = {}
    if seconds <= UPSTREAM_TILING_UP_TO:
        start = time.perf_counter()
        upstream = tiling.tiled_decode(latents, engine.decode_latents, tiling.CPU_CHUNK_SIZE)
        times["upstream"] = time.perf_counter() - start
    benchmark.group = f"scaling_vae_{seconds}s"
    budget = benchmark.pedantic(lambda: tiling.tiled_decode(latents, engine.decode_latents, engine.vae_chunk),
                                rounds=1, iterations=1)
    times["budget"] = benchmark.stats.stats.mean
    assert budget.shape == (1, 2, frames * 1920) and np.isfinite(budget).all(), budget.shape
    if "upstream" in times:
        assert upstream.shape == budget.shape, (upstream.shape, budget.shape)
    gflop = vae_decode_flops(wide[3], frames) / 1e9
    benchmark.extra_info.update({"frames": frames, "chunk": engine.vae_chunk, "gflop": gflop,
                                 **{f"{k}_s": v for k, v in times.items()}})
    for mode, value in times.items():
        scaling_rows.append({"graph": f"vae_{mode}", "backend": "py_ort", "seconds": seconds, "frames": frames,
                             "mean_s": value, "gflop": gflop})


@pytest.mark.long
@pytest.mark.parametrize("runner", ["torch", "py_ort", "py_ort-fp16"])
def test_benchmark_scaling_vae_tile(benchmark, engines, scaling_rows, runner):
    """One upstream VAE tile (256 frames) per backend, and fp16's VAE (the only profile that changes the VAE)."""
    latents = np.random.default_rng(256).standard_normal((1, 64, 256)).astype(np.float32)
    engine = engines(runner)
    engine.decode_latents(latents[:, :, :64])  # warm-up on a short window
    benchmark.group = "scaling_vae_tile_256"
    audio = benchmark.pedantic(lambda: engine.decode_latents(latents), rounds=1, iterations=1)
    assert np.isfinite(np.asarray(audio)).all(), f"{runner}: the tile decodes to non-finite samples"
    scaling_rows.append({"graph": "vae_tile_256", "backend": runner, "seconds": 256 / FRAMES_PER_SECOND,
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
caps = engine.generate(load_case(case).request())
done = time.perf_counter()
hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")]
print(json.dumps({"load_s": loaded - start, "generate_s": done - loaded, "peak_rss_mb": int(hwm[0].split()[1]) / 1024,
                  "stages": dict(getattr(caps, "timings", {}) or {})}))
"""


def _scaled_case(tmp_dir, seconds: int):
    """text2music_01 (all metadata, English lyrics, one seed) at ``seconds`` of audio."""
    from acestep_parity import paths

    data = json.loads((paths.CASES_DIR / "text2music_01.json").read_text(encoding="utf-8"))
    data.update(id=f"scaling_{seconds}s", duration=float(seconds))
    path = tmp_dir / f"scaling_{seconds}s.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.long
@pytest.mark.parametrize(("runner", "seconds"), E2E_PAIRS, ids=[f"{r}-{s}s" for r, s in E2E_PAIRS])
def test_benchmark_scaling_end_to_end(benchmark, wide, profile_dir, scaling_rows, tmp_path, runner, seconds):
    """One whole run per backend and profile in a fresh process, one at a time: wall time, its DiT and VAE
    stages against their roofline, and peak RSS."""
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
    frames = seconds * FRAMES_PER_SECOND
    stages = info.get("stages") or {}
    dit_gflop = 8 * dit_step_flops(wide[2], frames) / 1e9  # the turbo ODE: 8 DiT evaluations
    vae_gflop = vae_decode_flops(wide[3], frames) / 1e9
    row = {"graph": "end_to_end", "backend": runner, "seconds": seconds, "frames": frames,
           "mean_s": float(info["generate_s"]), "load_s": float(info["load_s"]),
           "peak_rss_mb": info.get("peak_rss_mb"), "dit_s": stages.get("dit"), "vae_s": stages.get("vae"),
           "dit_gflop": dit_gflop, "vae_gflop": vae_gflop, "gflop": dit_gflop + vae_gflop}
    assert row["mean_s"] > 0 and row["load_s"] >= 0, row
    benchmark.extra_info.update(row)
    scaling_rows.append(row)


@pytest.mark.long
def test_benchmark_scaling_sgemm(benchmark, wide, request, record_property):
    """The roofline's denominator: SGEMM GFLOP/s (numpy and ONNX Runtime), measured now; and the artifact sizes
    per profile. Kept on the run's table (tests/conftest.py prints it at the end)."""
    benchmark.group = "scaling_summary"
    rates = benchmark.pedantic(sgemm_rates, rounds=1, iterations=1)
    assert set(rates) == {"numpy", "ort"} and all(rate > 0 for rate in rates.values()), rates
    sizes = {}
    for profile in ("fp32", *PROFILES):
        folder = wide[1] if profile == "fp32" else wide[1].parent / profile
        if folder.is_dir():
            sizes[profile] = {p.name: p.stat().st_size for p in sorted(folder.glob("*.onnx*"))}
    assert sizes.get("fp32"), f"no fp32 artifacts in {wide[1]}"
    table = scaling_table(request.config)
    table.sgemm_gflops, table.artifact_bytes = rates, sizes
    benchmark.extra_info.update({"sgemm_gflops": rates, "artifact_bytes": sizes})
    record_property("scaling_sgemm", json.dumps({"sgemm_gflops": rates, "artifact_bytes": sizes}))


def test_scaling_summary_lines():
    """The table's lines from given numbers: ratios against torch and the roofline, the stages of a whole song,
    missing peak RSS, the long-song note, sizes."""
    table = ScalingTable(
        rows=[{"graph": "dit_step", "backend": "py_ort", "seconds": 10, "frames": 250, "mean_s": 0.5, "gflop": 20.0},
              {"graph": "dit_step", "backend": "torch", "seconds": 10, "frames": 250, "mean_s": 1.0, "gflop": 20.0},
              {"graph": "end_to_end", "backend": "rust-fp16", "seconds": 30, "frames": 750, "mean_s": 3.0,
               "load_s": 0.5, "peak_rss_mb": None},
              {"graph": "end_to_end", "backend": "py_ort-fp32", "seconds": 120, "frames": 3000, "mean_s": 40.0,
               "load_s": 1.0, "peak_rss_mb": 2048.0, "dit_s": 10.0, "vae_s": 28.0, "dit_gflop": 500.0,
               "vae_gflop": 2000.0, "gflop": 2500.0},
              {"graph": "vae_budget", "backend": "py_ort", "seconds": 10, "frames": 250, "mean_s": 1.5,
               "gflop": 100.0}],
        sgemm_gflops={"numpy": 80.0, "ort": 100.0},
        artifact_bytes={"fp32": {"dit_decoder.onnx": 3 * 2**20}})
    assert summary_lines(table) == [
        "SGEMM (2048^3 fp32): numpy 80 GFLOP/s, ONNX Runtime 100 GFLOP/s (roofline = a stage's FLOPs / 100 "
        "GFLOP/s; / roofline = time / that)",
        f"DiT step   10 s (T=250, 20.0 GFLOP) {'torch':20s} 1.000 s, / torch 1.00, / roofline 5.00",
        f"DiT step   10 s (T=250, 20.0 GFLOP) {'py_ort':20s} 0.500 s, / torch 0.50, / roofline 2.50",
        f"end to end  30 s {'rust-fp16':20s} generate 3.00 s (load 0.5 s), peak RSS n/a",
        f"end to end 120 s {'py_ort-fp32':20s} generate 40.00 s, / roofline 1.60 (load 1.0 s), peak RSS 2048 MB; "
        "DiT 10.0 s, / roofline 2.00, VAE 28.0 s, / roofline 1.40",
        "end to end from 120 s: py_ort-fp32, rust-fp32 only (torch's upstream VAE tiles take minutes each at real "
        "width; a profile's long song repeats the fp32 VAE)",
        f"{'vae_budget':14s} {'py_ort':12s} T=  250: 1.50 s, / roofline 1.50",
        "artifact sizes fp32: dit_decoder.onnx 3 MiB",
    ]
    without_sgemm = summary_lines(ScalingTable(rows=table.rows[:1]))
    assert without_sgemm == [f"DiT step   10 s (T=250, 20.0 GFLOP) {'py_ort':20s} 0.500 s"]
