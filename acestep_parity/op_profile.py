"""Where a graph's time goes: ONNX Runtime's own profiler, summed per op type, with FLOPs and GFLOP/s per op type.

A session is opened with the runtimes' options (``acestep_ort.session_manager.SessionConfig``) plus
``enable_profiling``; after a warm-up call, one profiled call writes ORT's Chrome-trace JSON, whose ``Node`` events
(``<node>_kernel_time``) carry each kernel's duration, op type and input/output shapes. FLOPs are counted from those
shapes for the GEMM-like ops (Conv, ConvTranspose, MatMul, Gemm and ORT's fused forms), 2 per multiply-add, as in
:mod:`acestep_parity.roofline`; every other op counts 0 FLOPs and is memory work. ``scripts/op_profile.py`` is the
command that regenerates the tables of docs/performance.md.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GEMM_OPS = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "NhwcConv", "MultiHeadAttention")


@dataclass
class OpRow:
    """One op type's share of a profiled call."""

    op_type: str
    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 and self.flops > 0 else 0.0


@dataclass
class OpProfile:
    """Per op type rows of one profiled call, plus its wall time (the kernels' sum is a little below it)."""

    rows: dict[str, OpRow] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def kernel_seconds(self) -> float:
        return sum(r.seconds for r in self.rows.values())

    @property
    def flops(self) -> float:
        return sum(r.flops for r in self.rows.values())

    def sorted_rows(self) -> list[OpRow]:
        return sorted(self.rows.values(), key=lambda r: -r.seconds)


def _shapes(entries: list) -> list[list[int]]:
    """ORT's ``[{"float": [1, 64, 750]}, ...]`` as ``[[1, 64, 750], ...]``."""
    return [list(next(iter(e.values()))) for e in entries]


def node_flops(op_type: str, inputs: list[list[int]], outputs: list[list[int]],
               weight: list[int] | None = None) -> float:
    """Multiply-add FLOPs of one kernel call from its shapes; 0 for the ops that are not GEMM work. ``weight``:
    the convolution's weight shape from the graph (ORT's trace omits a weight it has prepacked)."""
    if op_type not in GEMM_OPS or not inputs or not outputs:
        return 0.0
    out = outputs[0]
    if op_type in ("Conv", "FusedConv", "NhwcConv"):
        weight = weight or inputs[1]  # [Cout, Cin/group, *kernel]; output [N, Cout, *spatial]
        return 2.0 * math.prod(out) * math.prod(weight[1:])
    if op_type == "ConvTranspose":
        weight = weight or inputs[1]  # x [N, Cin, *spatial]; weight [Cin, Cout/group, *kernel]
        return 2.0 * math.prod(inputs[0]) * math.prod(weight[1:])
    if op_type == "MultiHeadAttention":  # query [B, S, H*D], key [B, L, H*D]: scores and weighted sum
        return 4.0 * math.prod(inputs[0]) * inputs[1][1] if len(inputs) > 1 and len(inputs[1]) == 3 else 0.0
    k = inputs[0][-1]  # MatMul / Gemm: every output element is a K-long dot product
    return 2.0 * math.prod(out) * k


def conv_weights(graph: Path) -> dict[str, list[int]]:
    """Node name -> weight shape of every Conv / ConvTranspose whose weight is an initializer (no tensor data
    read)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    return {node.name: shapes[node.input[1]] for node in model.graph.node
            if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in shapes}


def parse_trace(trace: list[dict], weights: Mapping[str, list[int]] | None = None) -> dict[str, OpRow]:
    """Per op type rows from ORT's profile events (``cat == "Node"``, name ending in ``_kernel_time``);
    ``weights``: :func:`conv_weights` of the graph."""
    rows: dict[str, OpRow] = {}
    weights = weights or {}
    for event in trace:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        op = args.get("op_name", "?")
        row = rows.setdefault(op, OpRow(op))
        row.calls += 1
        row.seconds += float(event.get("dur", 0)) / 1e6
        row.flops += node_flops(op, _shapes(args.get("input_type_shape", [])),
                                _shapes(args.get("output_type_shape", [])),
                                weights.get(name.removesuffix("_kernel_time")))
    return rows


def profile_graph(graph: Path, feeds: Mapping[str, np.ndarray], *, threads: int = 0, warmup: int = 1) -> OpProfile:
    """One profiled call of ``graph`` on ``feeds`` after ``warmup`` plain calls, with the runtimes' session options
    (no CPU arena, all optimizations, ``threads`` intra-op threads: 0 = ORT's default)."""
    import time

    import onnxruntime as ort

    from acestep_ort.session_manager import SessionConfig

    with tempfile.TemporaryDirectory(prefix="acestep-op-profile-") as tmp:
        opts = SessionConfig(intra_op_threads=threads).session_options()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "trace")
        session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
        for _ in range(warmup):  # first calls allocate and pick kernels: not what a song's steady state costs
            session.run(None, dict(feeds))
        start_ns = time.perf_counter_ns()
        session.run(None, dict(feeds))
        wall = (time.perf_counter_ns() - start_ns) / 1e9
        trace = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    # the trace holds every call: keep the events of the last one
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(runs) >= 2:
        begin = runs[-1]["ts"]
        trace = [e for e in trace if e.get("ts", 0) >= begin]
    return OpProfile(rows=parse_trace(trace, conv_weights(graph)), wall_seconds=wall)


def table_lines(profile: OpProfile, sgemm_gflops: float, top: int = 12) -> list[str]:
    """A Markdown table: op type, calls, seconds, share, GFLOP, GFLOP/s and its ratio to the SGEMM rate."""
    total = profile.kernel_seconds or 1.0
    lines = ["| op type | calls | time | share | GFLOP | GFLOP/s | / SGEMM |", "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = profile.sorted_rows()
    shown, rest = rows[:top], rows[top:]
    for r in shown:
        rate = r.gflops_per_s
        lines.append(f"| {r.op_type} | {r.calls} | {r.seconds:.3f} s | {100 * r.seconds / total:.1f} % | "
                     f"{r.flops / 1e9:.1f} | {rate:.0f} | {rate / sgemm_gflops:.2f} |" if r.flops else
                     f"| {r.op_type} | {r.calls} | {r.seconds:.3f} s | {100 * r.seconds / total:.1f} % | 0 | — | — |")
    if rest:
        secs = sum(r.seconds for r in rest)
        lines.append(f"| {len(rest)} other op types | {sum(r.calls for r in rest)} | {secs:.3f} s | "
                     f"{100 * secs / total:.1f} % | {sum(r.flops for r in rest) / 1e9:.1f} | | |")
    rate = profile.flops / profile.wall_seconds / 1e9 if profile.wall_seconds else 0.0
    lines.append(f"| **call** | | {profile.wall_seconds:.3f} s wall | | {profile.flops / 1e9:.1f} | {rate:.0f} | "
                 f"{rate / sgemm_gflops:.2f} |")
    return lines
