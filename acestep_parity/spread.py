"""How far the PyTorch reference moves across CPU code paths on this machine: the ISA / thread sweep.

Each *setting* is a set of environment variables that steer which kernels ATen (``ATEN_CPU_CAPABILITY``), oneDNN
(``ONEDNN_MAX_CPU_ISA``) and the thread pools (``OMP_NUM_THREADS``) use. The reference runs once per setting in
a fresh process (the variables are read at start-up) and every capture is compared with the golden.

This is a *check*, not the source of the golden gates: one machine's sweep underestimates what another vendor's
CPU does (cache-dependent kernel blocking is not an ISA switch), so the gates in ``cases/tolerances.json`` come from
cross-vendor figures (``docs/parity_ops.md``), and ``tests/test_cross_machine.py`` re-runs the reference under
:func:`other_isa_setting` in every CI run to show that they still hold with margin.

``acestep-parity spread`` runs the sweep and prints the table; ``python -m acestep_parity.spread`` is the worker
each setting runs in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acestep_parity import metrics

COMPARED = ("text_hidden_states", "encoder_hidden_states", "vt", "xt", "pred_latents", "audio")


@dataclass(frozen=True)
class Setting:
    name: str
    env: dict[str, str] = field(default_factory=dict)


def _has_avx512() -> bool:
    path = Path("/proc/cpuinfo")
    return path.is_file() and " avx512f" in path.read_text(encoding="utf-8", errors="replace")


def sweep_settings() -> list[Setting]:
    """The settings of the sweep (those this CPU can run)."""
    out = [
        Setting("default"),
        Setting("threads1", {"OMP_NUM_THREADS": "1"}),
        Setting("threads2", {"OMP_NUM_THREADS": "2"}),
        Setting("aten-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}),
        Setting("aten-default", {"ATEN_CPU_CAPABILITY": "default"}),
        Setting("onednn-avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
        Setting("onednn-sse41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
        Setting("avx2-all-1thread", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                     "OMP_NUM_THREADS": "1"}),
        # MKL's own code-path choice (what differs on another vendor's CPU: MKL dispatches by vendor and ISA).
        Setting("mkl-cbwr-avx2", {"MKL_CBWR": "AVX2"}),
        Setting("mkl-cbwr-compatible", {"MKL_CBWR": "COMPATIBLE"}),
        Setting("mkl-avx2-aten-avx2-1thread", {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                                               "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}),
    ]
    if _has_avx512():
        out.insert(4, Setting("aten-avx512", {"ATEN_CPU_CAPABILITY": "avx512"}))
        out.insert(7, Setting("onednn-avx512", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}))
    return out


def other_isa_setting() -> Setting:
    """A setting that moves the reference off this machine's default kernels as far as one machine can: MKL's
    AVX2 code path (the largest mover measured, of the size another vendor's CPU shows) with AVX2 ATen and oneDNN
    kernels on an AVX-512 machine, ATen's scalar path and oneDNN SSE4.1 on an AVX2 one; one thread."""
    if _has_avx512():
        return Setting("mkl-avx2-aten-avx2-1thread", {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                                                      "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"})
    return Setting("mkl-compat-scalar-1thread", {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default",
                                                 "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"})


def run_reference(setting: Setting, checkpoint_dir: Path, cases_dir: Path, case_ids: list[str],
                  out_dir: Path, timeout: float = 1800) -> dict[str, Path]:
    """Run the reference on ``case_ids`` in a fresh process under ``setting``; one npz of captures per case."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **setting.env}
    cmd = [sys.executable, "-m", "acestep_parity.spread", "--checkpoint-dir", str(checkpoint_dir),
           "--cases-dir", str(cases_dir), "--out", str(out_dir), *case_ids]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"reference under {setting.name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {cid: out_dir / f"{cid}.npz" for cid in case_ids}


PER_STEP = ("vt", "xt")


def compare(golden: dict[str, np.ndarray], run: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{tensor: {max_abs, rmse[, snr_db]}}`` of a run against the golden (the tensors both hold); for the
    per-step tensors (vt, xt) the worst step, as the parity tests gate each step on its own."""
    out = {}
    for name in COMPARED:
        if name not in golden or name not in run:
            continue
        ref, cand = golden[name].astype(np.float64), run[name].astype(np.float64)
        pairs = list(zip(ref, cand, strict=True)) if name in PER_STEP else [(ref, cand)]
        row = {"max_abs": max(metrics.max_abs(r, c) for r, c in pairs),
               "rmse": max(metrics.rmse(r, c) for r, c in pairs)}
        if name == "audio":
            row["snr_db"] = metrics.snr_db(ref, cand)
        out[name] = row
    return out


def worst(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per tensor, the largest max_abs / rmse and smallest SNR over several comparisons."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        for tensor, values in row.items():
            slot = out.setdefault(tensor, {})
            for metric, value in values.items():
                better = min if metric == "snr_db" else max
                slot[metric] = value if metric not in slot else better(slot[metric], value)
    return out


def sweep(checkpoint_dir: Path, cases_dir: Path, golden_load, case_ids: list[str],
          settings: list[Setting] | None = None, progress=print) -> dict[str, dict]:
    """Run every setting and return ``{setting: {"env": …, "worst": {tensor: metrics}, "cases": {…}}}``."""
    results = {}
    for setting in settings or sweep_settings():
        with tempfile.TemporaryDirectory() as tmp:
            files = run_reference(setting, checkpoint_dir, cases_dir, case_ids, Path(tmp))
            per_case = {}
            for cid, path in files.items():
                with np.load(path) as data:
                    per_case[cid] = compare(golden_load(cid), {k: data[k] for k in data.files})
        results[setting.name] = {"env": setting.env, "worst": worst(list(per_case.values())), "cases": per_case}
        progress(f"{setting.name:20s} " + "  ".join(
            f"{t} {v['max_abs']:.2g}/{v['rmse']:.2g}" for t, v in results[setting.name]["worst"].items()))
    return results


def _worker(argv: list[str]) -> int:
    """Runs inside the fresh process: the reference on the given cases, captures written as npz."""
    parser = argparse.ArgumentParser(prog="python -m acestep_parity.spread")
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--cases-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("case_ids", nargs="+")
    args = parser.parse_args(argv)
    from acestep_ort.host.case import discover_cases, valid_cases
    from acestep_parity.torch_ref import load_engine

    cases = {c.id: c for c in valid_cases(discover_cases(Path(args.cases_dir), args.case_ids))}
    engine = load_engine(Path(args.checkpoint_dir))
    for cid in args.case_ids:
        case = cases[cid]
        caps = engine.generate_simple(case) if case.task == "simple_mode" else engine.generate(case.request())
        np.savez(Path(args.out) / f"{cid}.npz", **{k: v for k, v in caps.arrays.items() if k in COMPARED})
    print(json.dumps({"cases": args.case_ids}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1:]))
