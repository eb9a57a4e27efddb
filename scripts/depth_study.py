"""How py_ort~torch error grows with the DiT's depth: per-step vt / xt and audio SNR, one case, fresh processes.

    python scripts/depth_study.py --checkpoint-dir DIR [--checkpoint-dir DIR ...] [--case text2music_02]
        [--out reports/realsize/depth.json]

Give one checkpoint per depth: the ``full-dit2`` / ``full-dit8`` presets (``acestep-parity synth``) share every
tensor but the DiT's depth with ``full``, so the rows differ in depth only. For each, torch and py_ort run the case
in a child process each (``acestep_parity.backends.isolated``; py_ort also evaluates the DiT teacher-forced on
torch's per-step inputs). Prints a Markdown table (docs/realsize.md) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from acestep_ort.host.case import load_case
from acestep_parity import metrics, paths
from acestep_parity.backends import REGISTRY, BackendContext
from acestep_parity.backends.isolated import IsolatedBackend, teacher_inputs
from acestep_parity.checkpoint import DIT_DIR, checkpoint_id, file_hashes, read_json


def depth_row(checkpoint: Path, case_path: Path) -> dict:
    cid = checkpoint_id(checkpoint, file_hashes(checkpoint))
    case = load_case(case_path)
    torch_backend = IsolatedBackend(REGISTRY["torch"], BackendContext(checkpoint, cid, "fp32", paths.cache_dir()),
                                    lambda _b: ([case], [], []))
    ref = torch_backend.run_case(case).arrays
    ort_backend = IsolatedBackend(REGISTRY["py_ort"], BackendContext(checkpoint, cid, "fp32", paths.cache_dir()),
                                  lambda _b: ([case], [ref], []))
    cand = ort_backend.run_case(case).arrays
    teacher = [ort_backend.dit_step(*args) for _, args in teacher_inputs(ref)]
    steps = len(ref["schedule"])
    row = {
        "checkpoint_id": cid, "dit_layers": read_json(checkpoint / DIT_DIR / "config.json")["num_hidden_layers"],
        "case": case.id,
        "vt_teacher_max_abs": [metrics.max_abs(ref["vt"][i], teacher[i]) for i in range(steps)],
        "vt_teacher_rmse": [metrics.rmse(ref["vt"][i], teacher[i]) for i in range(steps)],
        "vt_free_max_abs": [metrics.max_abs(ref["vt"][i], cand["vt"][i]) for i in range(steps)],
        "xt_free_max_abs": [metrics.max_abs(ref["xt"][i], cand["xt"][i]) for i in range(len(ref["xt"]))],
        "xt_free_rmse": [metrics.rmse(ref["xt"][i], cand["xt"][i]) for i in range(len(ref["xt"]))],
        "pred_latents_max_abs": metrics.max_abs(ref["pred_latents"], cand["pred_latents"]),
        "audio_snr_db": metrics.snr_db(ref["audio"], cand["audio"]),
        "audio_max_abs": metrics.max_abs(ref["audio"], cand["audio"]),
        "vt_rms": float(np.sqrt(np.mean(np.square(ref["vt"], dtype=np.float64)))),
    }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", action="append", required=True)
    parser.add_argument("--case", default="text2music_02")
    parser.add_argument("--out", default="reports/realsize/depth.json")
    args = parser.parse_args(argv)
    case_path = paths.CASES_DIR / f"{args.case}.json"
    rows = []
    for directory in args.checkpoint_dir:
        print(f"{directory}: torch, then py_ort, in fresh processes ...", file=sys.stderr, flush=True)
        rows.append(depth_row(Path(directory).resolve(), case_path))
    rows.sort(key=lambda r: r["dit_layers"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("| DiT layers | vt teacher max_abs (worst step) / rmse | vt free max_abs | xt free max_abs / rmse (worst step) "
          "| pred_latents max_abs | audio SNR | audio max_abs |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dit_layers']} | {max(r['vt_teacher_max_abs']):.2e} / {max(r['vt_teacher_rmse']):.2e} | "
              f"{max(r['vt_free_max_abs']):.2e} | {max(r['xt_free_max_abs']):.2e} / {max(r['xt_free_rmse']):.2e} | "
              f"{r['pred_latents_max_abs']:.2e} | {r['audio_snr_db']:.1f} dB | {r['audio_max_abs']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
