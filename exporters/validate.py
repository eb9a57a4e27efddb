"""Running an exported graph with the pinned ONNX Runtime settings and checking a run against the contract.

The checks run in Optimum's order, before any value is compared: output names, then dtypes, then shapes (each
symbolic axis evaluated from the concrete input sizes, e.g. ``T_lyric+1+T_text``). A mis-declared dynamic axis
(say B specialised to the export batch) shows up here as an ORT dimension error or a wrong output shape, on
the first grid shape that differs from the export shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acestep_parity.exporters.specs import ORT, GraphSpec, OrtSettings

_LEVELS = {"ORT_DISABLE_ALL": "disable", "ORT_ENABLE_BASIC": "basic", "ORT_ENABLE_EXTENDED": "extended",
           "ORT_ENABLE_ALL": "all"}


def session_options(settings: OrtSettings = ORT):
    """The export tests' pinned settings, built by the runtime's one options builder (``SessionConfig``)."""
    from acestep_ort.session_manager import SessionConfig

    if settings.execution_mode != "ORT_SEQUENTIAL":
        raise ValueError(f"execution_mode {settings.execution_mode!r}: every session here runs sequentially")
    return SessionConfig(intra_op_threads=settings.intra_op_num_threads,
                         inter_op_threads=settings.inter_op_num_threads,
                         optimization=_LEVELS[settings.graph_optimization_level]).session_options()


def open_session(path: Path | str | bytes, settings: OrtSettings = ORT, prepack: bool = True):
    """An ``InferenceSession`` with the one set of pinned options (path, or serialized model bytes).

    ``prepack=False`` keeps ONNX Runtime from copying the MatMul weights into its packed layout: the weights of a
    graph with external data then stay memory-mapped from the ``.data`` file (measured on the full-size text
    encoder: 34 MB anonymous memory after loading instead of 1.7 GB), which is what a one-off check wants."""
    import onnxruntime as ort

    model = str(path) if isinstance(path, Path) else path
    options = session_options(settings)
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(model, options, providers=list(settings.providers))


def run_graph(session, spec: GraphSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed the spec's inputs by name; outputs by the session's own output names (checked separately)."""
    feeds = {name: inputs[name] for name in spec.input_names}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def check_outputs(spec: GraphSpec, sizes: Mapping[str, int], dims: Mapping[str, int],
                  outputs: Mapping[str, np.ndarray]) -> list[str]:
    """Contract problems of one run: names, then dtypes, then shapes; an empty list means the run conforms."""
    if list(outputs) != spec.output_names:
        return [f"{spec.name}: output names {list(outputs)} != contract {spec.output_names}"]
    problems = []
    for tensor in spec.outputs:
        value = outputs[tensor.name]
        if value.dtype != np.dtype(tensor.dtype):
            problems.append(f"{spec.name}.{tensor.name}: dtype {value.dtype} != contract {tensor.dtype}")
    if problems:
        return problems
    for tensor in spec.outputs:
        want = tensor.concrete_shape(sizes, dims)
        if tuple(outputs[tensor.name].shape) != want:
            problems.append(f"{spec.name}.{tensor.name}: shape {tuple(outputs[tensor.name].shape)} != contract "
                            f"{want} = {list(tensor.shape)} at {dict(sizes)}")
    return problems


def grid_check(session, spec: GraphSpec, grid: Iterable[tuple[Mapping[str, int], Mapping[str, np.ndarray]]],
               dims: Mapping[str, int]) -> list[str]:
    """Run every (sizes, inputs) of a shape grid; every failure to run or to conform, with the sizes."""
    problems = []
    for sizes, inputs in grid:
        try:
            outputs = run_graph(session, spec, inputs)
        except Exception as exc:  # ORT raises its own exception types (InvalidArgument, Fail, ...)
            problems.append(f"{spec.name} at {dict(sizes)}: ORT refused the inputs: {exc}")
            continue
        problems.extend(check_outputs(spec, sizes, dims, outputs))
    return problems


# ------------------------------------------------------------------------------------ the export's own check

# Two shapes per graph, batch 1 and 2, none of them an export (dummy) shape: what ``acestep-export --validate``
# runs right after writing each graph. The full grid is tests/test_export.py's; this one is sized for the real
# model on a 2-core machine (seconds per graph). ``lengths`` right-pads a batch item.
SMOKE_GRID: dict[str, list[dict]] = {
    "text_encoder": [{"B": 1, "T_text": 7}, {"B": 2, "T_text": 77}],
    "lyric_embedding": [{"B": 1, "T_lyric": 64}, {"B": 2, "T_lyric": 300}],
    "condition_encoder": [{"B": 1, "T_text": 7, "T_lyric": 64},
                          {"B": 2, "T_text": 23, "T_lyric": 300,
                           "lengths": {"text_attention_mask": (23, 15), "lyric_attention_mask": (300, 120)}}],
    "dit_decoder": [{"B": 1, "T": 155, "T_enc": 40}, {"B": 2, "T": 64, "T_enc": 20}],
    "vae_decoder": [{"B": 1, "T": 33}, {"B": 2, "T": 20}],
    "lm_prefill": [{"B": 1, "T_lm": 64}, {"B": 2, "T_lm": 9}],
    "lm_decode": [{"B": 1, "T_lm": 1, "P_lm": 60}, {"B": 2, "T_lm": 4, "P_lm": 17}],
}


@dataclass
class SmokePoint:
    """One smoke-grid shape: its inputs and the PyTorch module's outputs (computed before the module is freed)."""

    sizes: dict[str, int]
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]


def smoke_references(spec: GraphSpec, models, dims: Mapping[str, int]) -> list[SmokePoint]:
    """The torch outputs of ``spec``'s smoke grid, so the module can be freed before ONNX Runtime loads the graph
    (the check then holds one copy of the weights, never two)."""
    from acestep_parity.exporters.export import graph_module
    from acestep_parity.exporters.inputs import make_inputs

    points = []
    for i, entry in enumerate(SMOKE_GRID[spec.name]):
        sizes = {k: v for k, v in entry.items() if k != "lengths"}
        inputs = make_inputs(spec, sizes, dims, seed=100 + i, silence_latent=models.silence_latent,
                             lengths=entry.get("lengths"))
        expected = {k: np.asarray(v) for k, v in graph_module(spec).reference(models, inputs).items()}
        points.append(SmokePoint(sizes, inputs, expected))
    return points


def smoke_check(path: Path, spec: GraphSpec, points: Iterable[SmokePoint], dims: Mapping[str, int],
                gates: Mapping[str, Mapping[str, float]] | None = None) -> tuple[list[dict], list[str]]:
    """Run the written graph on the smoke grid: per shape and output, max_abs / rmse against torch (and the
    ``onnx~torch`` max_abs gate where given); contract problems and non-finite outputs are errors."""
    session = open_session(Path(path), prepack=False)
    rows, problems = [], []
    for point in points:
        try:
            outputs = run_graph(session, spec, point.inputs)
        except Exception as exc:  # ORT's own exception types
            problems.append(f"{spec.name} at {point.sizes}: ORT refused the inputs: {exc}")
            continue
        found = check_outputs(spec, point.sizes, dims, outputs)
        problems.extend(found)
        if found:
            continue
        for name in spec.output_names:
            got, want = outputs[name], point.expected[name]
            if got.dtype.kind == "f" and not np.isfinite(got).all():
                problems.append(f"{spec.name}.{name} at {point.sizes}: non-finite output")
                continue
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            row = {"sizes": point.sizes, "output": name, "max_abs": float(diff.max(initial=0.0)),
                   "rmse": float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0}
            gate = (gates or {}).get(name, {}).get("max_abs")
            if gate is not None:
                row["gate_max_abs"] = gate
                row["within_gate"] = row["max_abs"] <= gate
            rows.append(row)
    return rows, problems


def save_smoke_points(path: Path, points: list[SmokePoint]) -> Path:
    """The points of a worker's check, for its parent (``.npz``: sizes as JSON, inputs and expected outputs)."""
    import json

    arrays = {"sizes": np.asarray(json.dumps([p.sizes for p in points]))}
    for i, point in enumerate(points):
        arrays.update({f"{i}/in/{k}": v for k, v in point.inputs.items()})
        arrays.update({f"{i}/out/{k}": v for k, v in point.expected.items()})
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_smoke_points(path: Path) -> list[SmokePoint]:
    import json

    with np.load(path, allow_pickle=False) as data:
        sizes = json.loads(str(data["sizes"]))
        points = [SmokePoint(s, {}, {}) for s in sizes]
        for key in data.files:
            if key == "sizes":
                continue
            index, side, name = key.split("/", 2)
            target = points[int(index)].inputs if side == "in" else points[int(index)].expected
            target[name] = data[key]
    return points
