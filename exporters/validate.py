"""Running an exported graph with the pinned ONNX Runtime settings and checking a run against the contract.

The checks run in Optimum's order, before any value is compared: output names, then dtypes, then shapes (each
symbolic axis evaluated from the concrete input sizes, e.g. ``T_lyric+1+T_text``). A mis-declared dynamic axis
(say B specialised to the export batch) shows up here as an ORT dimension error or a wrong output shape, on
the first grid shape that differs from the export shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def open_session(path: Path | str | bytes, settings: OrtSettings = ORT):
    """An ``InferenceSession`` with the one set of pinned options (path, or serialized model bytes)."""
    import onnxruntime as ort

    model = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(model, session_options(settings), providers=list(settings.providers))


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
