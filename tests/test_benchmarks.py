"""Performance: torch reference vs py_ort on the same inputs in the same run, reported as ratios.

Excluded from the default run (``--benchmark-skip`` in pytest.ini); select with ``pytest --benchmark-only``.
No wall-clock time is asserted; the ratio table and peak memory are printed at the end and stored in the
benchmark JSON (``extra_info``).
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

CASE = "text2music_01"
from acestep_parity.reporter import BENCHMARK_STAGES as STAGES  # noqa: E402

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
def inputs(engines):
    caps = engines["torch"].run_case(load_case(paths.CASES_DIR / f"{CASE}.json"))
    return caps


def _stage_call(backend, stage: str, caps):
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
    request = load_case(paths.CASES_DIR / f"{CASE}.json").request()
    return lambda: engine.generate(request)


@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
@pytest.mark.parametrize("stage", STAGES)
def test_benchmark(benchmark, engines, inputs, stage, backend_name, request):
    call = _stage_call(engines[backend_name], stage, inputs)
    call()  # warm-up: first calls build kernels
    benchmark.group = stage
    benchmark.extra_info["backend"] = backend_name
    rounds = 3 if stage == "end_to_end" else 10
    benchmark.pedantic(call, rounds=rounds, iterations=1)
    results = request.config.stash.setdefault(_RESULTS_KEY, {})
    results[(stage, backend_name)] = benchmark.stats.stats.mean


@pytest.mark.parametrize("backend_name", ["torch", "py_ort"])
def test_benchmark_peak_memory(benchmark, engines, backend_name, request):
    target = engines["torch"].ctx.checkpoint_dir if backend_name == "torch" else engines["py_ort"].onnx_dir

    def run():
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, backend_name, str(target),
                               str(paths.CASES_DIR / f"{CASE}.json")], cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, timeout=600, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]

    benchmark.group = "process_end_to_end"
    peak = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = peak
    request.config.stash.setdefault(_RESULTS_KEY, {})[("peak_rss_mb", backend_name)] = peak


LONG_CASE = paths.CASES_DIR / "bench" / "long_600s.json"


def test_benchmark_long_song_peak_memory(benchmark, engines, request, record_property):
    """Issue 12: on the longest song upstream allows (600 s, T = 15000; ``cases/bench/long_600s.json``, not a
    parity case) py_ort's peak RSS is at most the torch reference's, each measured in a fresh process, one at a
    time. Slow (torch decodes 118 tiles: about 15 minutes on 2 cores), hence benchmark-only."""
    targets = {"torch": engines["torch"].ctx.checkpoint_dir, "py_ort": engines["py_ort"].onnx_dir}
    peaks: dict[str, float] = {}

    def run():
        for name in ("py_ort", "torch"):
            proc = subprocess.run([sys.executable, "-c", PEAK_RSS, name, str(targets[name]), str(LONG_CASE)],
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
