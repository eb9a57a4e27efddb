"""First-divergence diagnostic: which intermediate of a graph is the first to leave the PyTorch reference.

Called by the parity tests when a gate fails. It re-traces the graph's wrapper from the *current* reference
module (the same ``torch.onnx.export(dynamo=True)`` path; exports are reproducible, so intermediate value names
are those of the artifact), evaluates every FX node of the exported program with a ``torch.fx.Interpreter``, and
evaluates the same-named values of the *artifact under test* in one ONNX Runtime session that exposes them as
extra outputs (the pinned session options). Nodes are compared in topological order; the first one whose
``max_abs`` exceeds the threshold (scaled up for large activations) is the first divergence, reported with its
module scope (``nn_module_stack``, e.g. ``transformer.layers.2.self_attn``) and the top offenders.

This is ``torch.onnx.verification.verify_onnx_program(compare_intermediates=True)`` with two differences that
matter here: it compares the artifact on disk (a stale or mis-exported file is caught, not only converter
errors), and it runs one session for all intermediates instead of one session per node. It also compares the
traced wrapper's outputs with the reference module's, which separates a wrapper bug from a conversion bug.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acestep_parity.exporters.specs import ORT, GraphSpec, OrtSettings

REL_FLOOR = 1e-5  # fp32 noise grows with the activation scale; below REL_FLOOR * max|ref| is not a divergence


@dataclass
class Probe:
    """One compared intermediate."""

    index: int
    name: str
    scope: str
    target: str
    max_abs: float
    max_rel: float
    scale: float
    note: str = ""

    def line(self) -> str:
        extra = f" [{self.note}]" if self.note else ""
        return (f"#{self.index} {self.name} ({self.scope or '<top>'}, {self.target}): max_abs {self.max_abs:.3g}, "
                f"max_rel {self.max_rel:.3g}, max|ref| {self.scale:.3g}{extra}")


def _scope(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path).removeprefix("L['self'].").removeprefix("self.")


def _compare(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    e = np.asarray(expected).astype(np.float64)
    a = np.asarray(actual).astype(np.float64)
    diff = np.abs(e - a)
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()), float((diff / (np.abs(e) + 1e-7)).max()), float(np.abs(e).max())


def probe_intermediates(spec: GraphSpec, models, onnx_path: Path, inputs: Mapping[str, np.ndarray],
                        settings: OrtSettings = ORT) -> tuple[list[Probe], dict[str, np.ndarray]]:
    """Compare every same-named intermediate of the artifact with a fresh trace; (probes, traced outputs)."""
    import onnx_ir as ir
    import torch

    from acestep_parity.exporters.export import trace_graph
    from acestep_parity.exporters.validate import open_session

    traced = trace_graph(spec, models)
    module = traced.program.exported_program.module()
    args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in spec.input_names)
    torch_values: dict[str, tuple[np.ndarray, object]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n.op == "call_function" and isinstance(result, torch.Tensor):
                torch_values[n.name] = (result.detach().cpu().numpy().copy(), n)
            return result

    with torch.no_grad():
        result = Recorder(module).run(*args)
    flat = result if isinstance(result, (tuple, list)) else (result,)
    traced_outputs = {name: t.detach().numpy() for name, t in zip(spec.output_names, flat, strict=True)}

    model = ir.load(onnx_path)
    produced = {v.name: v for node in model.graph for v in node.outputs if v.name}
    graph_outputs = {v.name for v in model.graph.outputs}
    names = [n for n in torch_values if n in produced and produced[n].type is not None]
    for name in names:
        if name not in graph_outputs:
            model.graph.outputs.append(produced[name])
    with tempfile.TemporaryDirectory(prefix="diagnose-") as tmp:
        path = Path(tmp) / "probe.onnx"
        ir.save(model, path, external_data="probe.onnx.data")
        session = open_session(path, settings)
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in spec.input_names}
        wanted = [o.name for o in session.get_outputs() if o.name in torch_values or o.name in spec.output_names]
        onnx_values = dict(zip(wanted, session.run(wanted, feeds), strict=True))
        del session
    probes = []
    for index, name in enumerate(torch_values):
        if name not in onnx_values:
            continue
        expected, node = torch_values[name]
        actual = onnx_values[name]
        target = str(getattr(node.target, "__name__", node.target))
        if expected.shape != actual.shape:
            probes.append(Probe(index, name, _scope(node), target, float("inf"), float("inf"), 0.0,
                                f"shape {actual.shape} != {expected.shape}"))
            continue
        max_abs, max_rel, scale = _compare(expected, actual)
        probes.append(Probe(index, name, _scope(node), target, max_abs, max_rel, scale))
    for name in spec.output_names:  # the graph outputs carry contract names, not FX node names
        expected, actual = traced_outputs[name], onnx_values[name]
        if expected.shape != actual.shape:
            probes.append(Probe(len(torch_values), name, "<output>", "output", float("inf"), float("inf"), 0.0,
                                f"shape {actual.shape} != {expected.shape}"))
            continue
        probes.append(Probe(len(torch_values), name, "<output>", "output", *_compare(expected, actual)))
    return probes, traced_outputs


def first_divergence(spec: GraphSpec, models, onnx_path: Path, inputs: Mapping[str, np.ndarray], *,
                     threshold: float, top: int = 8, settings: OrtSettings = ORT) -> str:
    """A report naming the first diverging intermediate (and the top offenders); never raises."""
    try:
        from acestep_parity.exporters.export import graph_module

        probes, traced_outputs = probe_intermediates(spec, models, Path(onnx_path), inputs, settings)
        reference = graph_module(spec).reference(models, dict(inputs))
    except Exception as exc:  # a diagnostic must not hide the verdict it explains
        return f"first-divergence diagnostic failed: {type(exc).__name__}: {exc}"
    lines = [f"first divergence: {Path(onnx_path).name} (ONNX Runtime, {settings.graph_optimization_level}) vs "
             f"a fresh dynamo trace of the reference module; {len(probes)} intermediates compared in "
             f"topological order; divergent = max_abs > max({threshold:g}, {REL_FLOOR:g} * max|ref|)"]
    diverging = [p for p in probes if p.max_abs > max(threshold, REL_FLOOR * p.scale)]
    if diverging:
        lines.append(f"  FIRST: {diverging[0].line()}")
    else:
        lines.append("  no intermediate exceeds the max_abs threshold: the ONNX graph follows the traced program "
                     "(a non-max_abs gate failed, or the traced wrapper differs from the reference module: "
                     "see below)")
    lines.append(f"  top {top} by max_abs:")
    for probe in sorted(probes, key=lambda p: -p.max_abs)[:top]:
        lines.append(f"    {probe.line()}")
    lines.append("  traced wrapper vs reference module (torch vs torch):")
    for name in spec.output_names:
        max_abs, _, scale = _compare(reference[name], traced_outputs[name]) \
            if reference[name].shape == traced_outputs[name].shape else (float("inf"), 0.0, 0.0)
        lines.append(f"    {name}: max_abs {max_abs:.3g} (max|ref| {scale:.3g})")
    return "\n".join(lines)
