"""One place for ONNX Runtime sessions: providers, threads, optimization level, and I/O checks.

CPU is the default; the CUDA execution provider is used when asked for and present, with CPU as fallback.
``from_sessions`` accepts ready ``InferenceSession`` objects so tests (or hosts) choose their own options.
Every call validates the feeds against the graph's declared inputs, so a wrong name, dtype or rank is a clear
error naming the graph, never a crash deep inside ORT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from acestep_ort.host.digests import DigestError, verify_folder

GRAPHS = ("text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
              "tensor(float16)": np.float16, "tensor(int32)": np.int32}


class GraphContractError(RuntimeError):
    """A graph file that is missing or whose inputs/outputs do not match the I/O contract."""


@dataclass(frozen=True)
class SessionConfig:
    """Session options shared by every graph (and mirrored by the Rust runtime)."""

    intra_op_threads: int = int(os.environ.get("ACESTEP_ORT_THREADS", "0"))  # 0 = ORT's default (all cores)
    inter_op_threads: int = 1
    optimization: str = "all"  # "disable" | "basic" | "extended" | "all"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # ORT's CPU arena keeps every session's high-water mark for the life of the process (the DiT's attention
    # scores stay held while the VAE decodes) and grows in power-of-two regions; without it each run's planned
    # block is returned after the run. Measured on the 600 s case (docs/performance.md): peak RSS 9.4 GB -> below
    # the torch reference's. Numerics do not depend on it.
    cpu_mem_arena: bool = False

    def session_options(self) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = self.cpu_mem_arena
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        opts.log_severity_level = 3
        return opts

    def resolved_providers(self) -> list[str]:
        available = set(ort.get_available_providers())
        chosen = [p for p in self.providers if p in available]
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")  # always keep the CPU fallback
        return chosen


def read_contract(onnx_dir: Path) -> dict:
    """``manifest.json`` of an exported folder ({} when there is none); an unreadable one is a clear error."""
    path = Path(onnx_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GraphContractError(f"{path} is not readable JSON ({exc}); re-export the folder with `acestep-export`"
                                 ) from None
    if not isinstance(data, dict):
        raise GraphContractError(f"{path} is not a JSON object; re-export the folder with `acestep-export`")
    return data


class SessionManager:
    """Holds one session per graph and runs them with checked feeds."""

    def __init__(self, sessions: dict[str, ort.InferenceSession], contract: dict | None = None):
        self.sessions = sessions
        self.contract = contract or {}

    @classmethod
    def from_dir(cls, onnx_dir: Path, config: SessionConfig | None = None, graphs: tuple[str, ...] = GRAPHS,
                 missing_hint: str | None = None) -> SessionManager:
        """Open ``graphs`` of an exported folder: every file the manifest lists for them (and every asset) is
        checked against its size and SHA-256 first (:mod:`acestep_ort.host.digests`), so a damaged folder is
        refused naming the file instead of running silently."""
        onnx_dir = Path(onnx_dir)
        config = config or SessionConfig()
        contract = read_contract(onnx_dir)
        for name in graphs:
            path = onnx_dir / f"{name}.onnx"
            if not path.is_file():
                raise GraphContractError(
                    f"missing graph {path}; {missing_hint or f'export it with `acestep-export --out {onnx_dir}`'}")
        if contract:
            try:
                verify_folder(onnx_dir, contract, graphs)
            except DigestError as exc:
                raise GraphContractError(str(exc)) from None
        sessions = {}
        for name in graphs:
            path = onnx_dir / f"{name}.onnx"
            try:
                sessions[name] = ort.InferenceSession(str(path), sess_options=config.session_options(),
                                                      providers=config.resolved_providers())
            except Exception as exc:  # ORT raises its own types (InvalidProtobuf, Fail, ...): one line, the file named
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise GraphContractError(f"{path}: ONNX Runtime cannot load it: {first}") from None
        manager = cls(sessions, contract)
        manager.check_contract()
        return manager

    @classmethod
    def from_sessions(cls, sessions: dict[str, ort.InferenceSession], contract: dict | None = None):
        manager = cls(sessions, contract)
        manager.check_contract()
        return manager

    def _declared(self, graph: str) -> dict | None:
        graphs = self.contract.get("graphs", {})
        return graphs.get(graph)

    def check_contract(self) -> None:
        """Input/output names (and dtypes where the manifest gives them) must match the manifest's contract."""
        for name, session in self.sessions.items():
            declared = self._declared(name)
            if declared is None:
                continue
            for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
                want = [(io["name"], io.get("dtype")) for io in declared.get(kind, [])]
                got = [(io.name, _dtype_name(io.type)) for io in actual]
                if [w[0] for w in want] != [g[0] for g in got]:
                    raise GraphContractError(
                        f"{name}.onnx {kind} {[g[0] for g in got]} do not match the contract {[w[0] for w in want]}")
                for (wname, wtype), (_, gtype) in zip(want, got, strict=True):
                    if wtype and gtype and wtype != gtype:
                        raise GraphContractError(f"{name}.onnx {kind[:-1]} {wname!r} is {gtype}, contract says {wtype}")

    def input_dtype(self, graph: str, name: str) -> type:
        for io in self.sessions[graph].get_inputs():
            if io.name == name:
                return _ORT_TYPES[io.type]
        raise GraphContractError(f"{graph}.onnx has no input {name!r}")

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self.sessions[graph]
        declared = {io.name: io for io in session.get_inputs()}
        if set(feeds) != set(declared):
            raise GraphContractError(f"{graph}.onnx expects inputs {sorted(declared)}, got {sorted(feeds)}")
        checked = {}
        for name, value in feeds.items():
            io = declared[name]
            dtype = _ORT_TYPES.get(io.type)
            if dtype is None:
                raise GraphContractError(f"{graph}.onnx input {name!r} has unsupported type {io.type}")
            array = np.ascontiguousarray(value)
            if array.dtype != dtype:
                raise GraphContractError(f"{graph}.onnx input {name!r} must be {np.dtype(dtype)}, got {array.dtype}")
            if len(io.shape) != array.ndim:
                raise GraphContractError(
                    f"{graph}.onnx input {name!r} must have rank {len(io.shape)} {io.shape}, got shape {array.shape}")
            checked[name] = array
        return session.run(None, checked)


def _dtype_name(ort_type: str) -> str | None:
    dtype = _ORT_TYPES.get(ort_type)
    return np.dtype(dtype).name if dtype is not None else None
