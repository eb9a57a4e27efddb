"""Performance: torch reference vs py_ort on the same inputs in the same run, reported as ratios.

Excluded from the default run (``--benchmark-skip`` in pytest.ini); select with ``pytest --benchmark-only``, one
case's with ``-k text2music_01`` (every id names the case it times). The 600 s song is marked ``long``: deselected
unless asked for (``pytest --benchmark-only -m long -k long_song``). No wall-clock time is asserted; the ratio
table (candidate / torch time, < 1: faster) and peak memory are printed at the end and stored in the benchmark
JSON (``extra_info``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from acestep_ort.host.case import load_case
from acestep_parity import paths
from acestep_parity.reporter import BENCHMARK_RESULTS as _RESULTS_KEY
from acestep_parity.reporter import BENCHMARK_STAGES as STAGES
from acestep_parity.reporter import benchmark_ratio_lines

# the cases these benchmarks time (each test id names its case, so ``-k <case>`` selects them)
CASES = ("text2music_01",)

PEAK_RSS = """
import json, resource, sys
from pathlib import Path
from acestep_ort.host.case import load_case
from acestep_parity.reporter import BENCHMARK_RESULTS as _RESULTS_KEY
backend, target = sys.argv[1], sys.argv[2]
request = load_case(Path(sys.argv[3])).request()
if backend == "torch":
    from acestep_parity.torch_ref import load_engine
else:
    from acestep_ort import load_engine
load_engine(Path(target)).generate(request)
# VmHWM: this process image's peak RSS. ru_maxrss would include the forking parent's RSS (it survives exec).
status = Path("/proc/self/status")
hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM")] if status.exists() else []
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mb": peak_kb / 1024}))
"""


@pytest.fixture(scope="module")
def engines(parity_session):
    from acestep_parity.backends import REGISTRY

    out = {}
    for name in ("torch", "py_ort"):
        if name not in REGISTRY:
            pytest.skip(f"backend {name} not registered")
        backend = parity_session.backend(name, "fp32")
        availability = backend.availability()
        if not availability.ok:
            pytest.skip(f"{name}: {availability.reason}")
        out[name] = backend
    return out


@pytest.fixture(scope="module")
def inputs(engines, bench_case):
    caps = engines["torch"].run_case(load_case(paths.CASES_DIR / f"{bench_case}.json"))
    return caps


def _stage_call(backend, stage: str, caps, case_id: str):
    engine = backend.engine
    if stage == "text_encoder":
        return lambda: engine.encode_text(caps["text_token_ids"])
    if stage == "condition_encoder":
        from acestep_ort.host.latents import timbre_reference

        timbre, order = timbre_reference(engine.silence_latent, caps["text_token_ids"].shape[0])
        return lambda: engine.encode_condition(caps["text_hidden_states"], caps["text_attention_mask"],
                                               caps["lyric_hidden_states"], caps["lyric_attention_mask"],
                                               timbre, order)
    if stage == "dit_decoder":
        t = np.full((caps["xt"].shape[1],), caps["schedule"][3], dtype=np.float32)
        return lambda: engine.dit(caps["xt"][3], t, caps["encoder_hidden_states"], caps["context_latents"])
    if stage == "vae_decoder":
        latents = np.ascontiguousarray(caps["pred_latents"].transpose(0, 2, 1))
        return lambda: engine.decode_latents(latents)
    request = load_case(paths.CASES_DIR / f"{case_id}.json").request()
    return lambda: engine.generate(request)


@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("bench_case", CASES, scope="module")
def test_benchmark(benchmark, engines, inputs, bench_case, stage, backend_name, request):
    """One stage on the reference run's inputs; what was timed gives the reference's shape, finite."""
    call = _stage_call(engines[backend_name], stage, inputs, bench_case)
    call()  # warm-up: first calls build kernels
    benchmark.group = stage
    benchmark.extra_info["backend"] = backend_name
    rounds = 3 if stage == "end_to_end" else 10
    out = benchmark.pedantic(call, rounds=rounds, iterations=1)
    out = {"condition_encoder": lambda o: o[0], "end_to_end": lambda o: o["audio"]}.get(stage, lambda o: o)(out)
    expected = {"text_encoder": inputs["text_hidden_states"].shape, "condition_encoder":
                inputs["encoder_hidden_states"].shape, "dit_decoder": inputs["vt"][3].shape,
                "end_to_end": inputs["audio"].shape}.get(stage, np.shape(out))
    assert np.shape(out) == expected and np.isfinite(out).all(), f"{stage} ({backend_name}): {np.shape(out)}"
    results = request.config.stash.setdefault(_RESULTS_KEY, {})
    results[(stage, backend_name)] = benchmark.stats.stats.mean


@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
@pytest.mark.parametrize("bench_case", CASES)
def test_benchmark_peak_memory(benchmark, engines, bench_case, backend_name, request):
    target = engines["torch"].ctx.checkpoint_dir if backend_name == "torch" else engines["py_ort"].onnx_dir

    def run():
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, backend_name, str(target),
                               str(paths.CASES_DIR / f"{bench_case}.json")], cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, timeout=600, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]

    benchmark.group = "process_end_to_end"
    peak = benchmark.pedantic(run, rounds=1, iterations=1)
    assert peak > 0, f"{backend_name}: no peak RSS read"
    benchmark.extra_info["peak_rss_mb"] = peak
    request.config.stash.setdefault(_RESULTS_KEY, {})[("peak_rss_mb", backend_name)] = peak


LONG_CASES = ("long_600s",)  # cases/bench/: not parity cases


@pytest.mark.long
@pytest.mark.parametrize("bench_case", LONG_CASES)
def test_benchmark_long_song_peak_memory(benchmark, engines, bench_case, request, record_property):
    """Issue 12: on the longest song upstream allows (600 s, T = 15000; ``cases/bench/long_600s.json``, not a
    parity case) py_ort's peak RSS is at most the torch reference's, each measured in a fresh process, one at a
    time. Slow (torch decodes 118 tiles: about 15 minutes on 2 cores), hence benchmark-only and ``long``."""
    targets = {"torch": engines["torch"].ctx.checkpoint_dir, "py_ort": engines["py_ort"].onnx_dir}
    peaks: dict[str, float] = {}

    def run():
        for name in ("py_ort", "torch"):
            proc = subprocess.run([sys.executable, "-c", PEAK_RSS, name, str(targets[name]),
                                   str(paths.CASES_DIR / "bench" / f"{bench_case}.json")],
                                  cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=3600, check=True)
            peaks[name] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        return peaks

    benchmark.group = "long_song_600s"
    benchmark.pedantic(run, rounds=1, iterations=1)
    for name, peak in peaks.items():
        benchmark.extra_info[f"{name}_peak_rss_mb"] = peak
        request.config.stash.setdefault(_RESULTS_KEY, {})[("peak_rss_600s_mb", name)] = peak
    record_property("peak_rss_600s_mb", json.dumps(peaks))
    print(f"\n600 s case, peak RSS: py_ort {peaks['py_ort']:.0f} MB, torch {peaks['torch']:.0f} MB")
    assert peaks["py_ort"] <= peaks["torch"], f"600 s case peak RSS: py_ort {peaks['py_ort']:.0f} MB > torch " \
                                              f"{peaks['torch']:.0f} MB"


def test_benchmark_ratio_lines():
    """The terminal summary's py_ort / torch table from given means: a stage both measured, one not, peak RSS."""
    lines = benchmark_ratio_lines({("dit_decoder", "torch"): 0.03, ("dit_decoder", "py_ort"): 0.01,
                                   ("vae_decoder", "torch"): 0.5, ("peak_rss_mb", "py_ort"): 512.4})
    assert lines == ["py_ort / torch (mean time ratio; < 1 means py_ort is faster):",
                     f"  {'dit_decoder':18s} torch     30.00 ms  py_ort     10.00 ms  ratio  0.333x",
                     "  peak RSS of a one-case process, py_ort: 512 MiB"]
    assert benchmark_ratio_lines({}) == []
