"""Measured accuracy and speed of a profile against its fp32 source (and torch), written into its manifest.

Per graph (teacher-forced: every graph of both folders gets the very same recorded inputs): cosine, SNR and
max_abs of the first output against the fp32 graph, the planner's top-1 agreement, and the time per call of
both graphs in this process (same session options) as a ratio (< 1: the profile is faster). End to end: the
profile folder generates the evaluation cases; per-step ``vt`` cosine and the audio (SNR, Pearson, MR-STFT)
against the fp32 folder's run and, where the repository has a golden for the checkpoint, against the PyTorch
reference. These are the figures the manifest records; the parity suite's gates (cases/tolerances.json)
re-measure the end-to-end ones on every run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from acestep_parity import metrics

SAMPLE_RATE = 48000
TIMING_REPEATS = 3


def _session(path: Path):
    import onnxruntime as ort

    from acestep_ort.session_manager import SessionConfig

    config = SessionConfig()
    return ort.InferenceSession(str(path), sess_options=config.session_options(),
                                providers=config.resolved_providers())


def _seconds_per_call(session, feeds: list[dict]) -> float:
    """Best of ``TIMING_REPEATS`` passes over the recorded feeds, per call (one warm-up pass first)."""
    for feed in feeds[:1]:
        session.run(None, feed)
    best = float("inf")
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        for feed in feeds:
            session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best / max(1, len(feeds))


def graph_accuracy(graph: str, fp32_outputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    """Worst case over the calls: min cosine / SNR, max max_abs; the planner graphs add top-1 agreement."""
    cos = [metrics.cosine(r, c) for r, c in zip(fp32_outputs, outputs, strict=True)]
    snr = [metrics.snr_db(r, c) for r, c in zip(fp32_outputs, outputs, strict=True)]
    mab = [metrics.max_abs(r, c) for r, c in zip(fp32_outputs, outputs, strict=True)]
    out = {"calls": len(outputs), "cosine_min": min(cos), "snr_db_min": min(snr), "max_abs_max": max(mab)}
    if graph.startswith("lm_"):
        agree = [float(np.mean(np.argmax(r, -1) == np.argmax(c, -1))) for r, c in zip(fp32_outputs, outputs,
                                                                                        strict=True)]
        out["top1_agreement"] = float(np.mean(agree))
    return out


def _golden(golden_dir: Path | None, case_id: str) -> dict[str, np.ndarray] | None:
    if golden_dir is None:
        return None
    path = Path(golden_dir) / f"{case_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def end_to_end(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict:
    """Per-step vt cosine (worst step) and audio SNR / Pearson / MR-STFT of a run against a reference run."""
    out = {}
    if "vt" in ref and "vt" in cand and ref["vt"].shape == cand["vt"].shape:
        out["vt_cosine_min"] = min(metrics.cosine(r, c) for r, c in zip(ref["vt"], cand["vt"], strict=True))
    if "audio" in ref and ref["audio"].shape == cand["audio"].shape:
        out["audio_snr_db"] = metrics.snr_db(ref["audio"], cand["audio"])
        out["audio_pearson"] = metrics.pearson(ref["audio"], cand["audio"])
        out["audio_mrstft"] = metrics.multi_resolution_stft_distance(ref["audio"], cand["audio"],
                                                                     sample_rate=SAMPLE_RATE)
    if "lm_tokens" in ref and "lm_tokens" in cand:
        r, c = np.asarray(ref["lm_tokens"]), np.asarray(cand["lm_tokens"])
        out["lm_tokens_equal"] = bool(r.shape == c.shape and np.array_equal(r, c))
    return out


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def evaluate_profile(fp32_dir: Path, profile_dir: Path, manifest: dict, cases_dir: Path,
                     case_ids: tuple[str, ...], golden_dir: Path | None = None, max_calls: int = 12) -> dict:
    """Fill ``manifest`` (graph records and ``evaluation``) with the measured figures; return the summary."""
    from acestep_parity.exporters.profiles.feeds import record_feeds

    offered = tuple(n for n, r in manifest["graphs"].items() if r["offered"])
    ids = tuple(c for c in case_ids if (Path(cases_dir) / f"{c}.json").is_file())
    # the planner graphs only exist when the checkpoint has the LM; simple-mode cases need them
    if "lm_prefill" not in manifest["graphs"]:
        ids = tuple(c for c in ids if not c.startswith("simple_mode"))
    fp32 = record_feeds(fp32_dir, cases_dir, ids, offered, keep_outputs=True, max_calls=max_calls)
    for name in offered:
        record = manifest["graphs"][name]
        feeds, ref_out = fp32.feeds.get(name, []), fp32.outputs.get(name, [])
        if not feeds:
            record["accuracy_vs_fp32"] = {"calls": 0, "note": f"no {name} call in {', '.join(ids)}"}
            continue
        fp32_session = _session(Path(fp32_dir) / record["source"]["file"])
        prof_session = _session(Path(profile_dir) / record["file"])
        outs = [prof_session.run(None, f)[0] for f in feeds]
        record["accuracy_vs_fp32"] = _rounded(graph_accuracy(name, [o[0] for o in ref_out], outs))
        t32 = _seconds_per_call(fp32_session, feeds)
        tprof = _seconds_per_call(prof_session, feeds)
        record["speed"] = _rounded({"calls": len(feeds), "fp32_ms_per_call": t32 * 1e3,
                                    "profile_ms_per_call": tprof * 1e3, "time_ratio_vs_fp32": tprof / t32})
        record["size_ratio_vs_fp32"] = round(record["bytes"] / record["source"]["bytes"], 4)
    prof = record_feeds(profile_dir, cases_dir, ids, graphs=(), keep_outputs=False)
    summary = {}
    for case_id in ids:
        row = {"vs_fp32": _rounded(end_to_end(fp32.captures[case_id], prof.captures[case_id]))}
        golden = _golden(golden_dir, case_id)
        if golden is not None:
            row["vs_torch"] = _rounded(end_to_end(golden, prof.captures[case_id]))
            row["fp32_vs_torch"] = _rounded(end_to_end(golden, fp32.captures[case_id]))
        summary[case_id] = row
    manifest["evaluation"] = {
        "cases": list(ids),
        "golden": str(golden_dir.name) if golden_dir else None,
        "note": ("per graph: the fp32 run's recorded inputs replayed through both graphs (first "
                 f"{max_calls} calls per graph and case); end to end: each folder generates the case"),
        "end_to_end": summary,
        "machine": _machine(),
    }
    return summary


def _machine() -> str:
    try:
        from acestep_parity import machine

        return machine.summary(machine.describe())
    except Exception:  # a description must never stop the export
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """``python -m acestep_parity.exporters.profiles.evaluate PROFILE_DIR``: print a profile manifest's figures as a table."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    manifest = json.loads((Path(args[0]) / "manifest.json").read_text(encoding="utf-8"))
    print(f"profile {manifest['profile']}")
    for name, r in manifest["graphs"].items():
        acc, speed = r.get("accuracy_vs_fp32", {}), r.get("speed", {})
        print(f"  {name:18s} {r['method']:13s} {r['bytes'] / 1e6:8.2f} MB (x{r['bytes'] / r['source']['bytes']:.2f})"
              f"  cos {acc.get('cosine_min', '-')}  snr {acc.get('snr_db_min', '-')}"
              f"  time x{speed.get('time_ratio_vs_fp32', '-')}")
    for case_id, row in manifest.get("evaluation", {}).get("end_to_end", {}).items():
        print(f"  {case_id}: {json.dumps(row)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
