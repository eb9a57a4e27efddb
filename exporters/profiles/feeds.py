"""The inputs each graph really receives: recorded by running an ONNX folder on cases with the py_ort engine.

Used twice: int8_static calibrates on the DiT's recorded inputs of the calibration cases (a calibration reader
over real ``xt`` / ``t`` / conditioning, not random tensors), and the profile evaluation replays the evaluation
cases' inputs through the fp32 and the profile graph. Recording wraps the engine's ``SessionManager.run`` (and
the planner's), so the feeds are exactly what the host orchestration passes, for any model size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Calibration and evaluation use different cases (the gates are then measured on inputs the calibration never
# saw); both sets mix lengths, batch sizes and shifts.
CALIBRATION_CASES = ("text2music_02", "text2music_03", "text2music_05")
EVALUATION_CASES = ("text2music_01", "text2music_04", "simple_mode_01")


@dataclass
class Recording:
    """Per graph, every call's feeds and outputs in call order; per case, the run's captures."""

    feeds: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    outputs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    captures: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def describe_cases(cases_dir: Path, case_ids: tuple[str, ...]) -> dict:
    """``{case_id: sha256 of the case file}``: the calibration set is part of a profile's cache key."""
    out = {}
    for case_id in case_ids:
        path = Path(cases_dir) / f"{case_id}.json"
        out[case_id] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def _load_cases(cases_dir: Path, case_ids: tuple[str, ...]):
    from acestep_ort.host.case import Case, discover_cases

    found = {c.id: c for c in discover_cases(Path(cases_dir), list(case_ids)) if isinstance(c, Case)}
    missing = [c for c in case_ids if c not in found]
    if missing:
        raise FileNotFoundError(f"cases {missing} not found (or malformed) in {cases_dir}")
    return [found[c] for c in case_ids]


def _wrap(manager, graphs: tuple[str, ...] | None, rec: Recording, keep_outputs: bool) -> None:
    inner = manager.run

    def run(graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = inner(graph, feeds)
        if graphs is None or graph in graphs:
            rec.feeds.setdefault(graph, []).append({k: np.array(v) for k, v in feeds.items()})
            if keep_outputs:
                rec.outputs.setdefault(graph, []).append([np.array(o) for o in out])
        return out

    manager.run = run


def record_feeds(onnx_dir: Path, cases_dir: Path, case_ids: tuple[str, ...], graphs: tuple[str, ...] | None = None,
                 keep_outputs: bool = False, max_calls: int | None = None) -> Recording:
    """Run ``onnx_dir`` (py_ort) on the cases; record the feeds of ``graphs`` (None: all graphs).

    ``max_calls`` keeps only the first calls of each graph per case (the planner's decode runs hundreds of
    times; a handful of its calls are enough to measure it).
    """
    from acestep_ort.pipeline import load_engine

    engine = load_engine(Path(onnx_dir))
    rec = Recording()
    _wrap(engine.sessions, graphs, rec, keep_outputs)
    for case in _load_cases(cases_dir, case_ids):
        before = {g: len(v) for g, v in rec.feeds.items()}
        if case.task == "simple_mode":
            if engine._lm is None:
                _wrap(engine.lm.sessions, graphs, rec, keep_outputs)
            captures = engine.generate_simple(case)
        else:
            captures = engine.generate(case.request())
        rec.captures[case.id] = captures.arrays
        if max_calls is not None:
            for graph, calls in rec.feeds.items():
                start = before.get(graph, 0)
                del calls[start + max_calls:]
                if keep_outputs:
                    del rec.outputs[graph][start + max_calls:]
    return rec
