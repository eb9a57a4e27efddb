"""The ``rust`` backend: the Rust ORT runtime (``rust/acestep-ort``, the ``generate`` binary) on the shared exported
ONNX folder (:mod:`acestep_parity.backends.onnx_folder`) and the same ``libonnxruntime`` as ``py_ort``.

``run_case`` runs ``generate --case ... --dump caps.npz`` and reads the dump (the names, dtypes and shapes of
Python's captures; simple_mode cases run the Rust planner, ``acestep-core``'s FSM on ``lm_prefill``/``lm_decode``,
then text2music). ``dit_step`` and ``lm_teacher_logits`` go through one long-lived ``acestep-harness serve``
process (the harness binary speaks the test protocol; ``generate`` is the user CLI; measured on the tiny checkpoint:
~9 ms per DiT step, against ~200 ms for an ``acestep-harness dit-step`` process per step, which reloads ONNX
Runtime and the graph every time). The adapter builds nothing: without the binary it skips, saying how
to build it (``make test`` does).

The binary loads the very ONNX Runtime library of this Python's ``onnxruntime`` package (``ORT_DYLIB_PATH`` is
set to it unless already set), and both runtimes take their thread count from ``ACESTEP_ORT_THREADS`` (0 = ORT's
default) with the same optimization level, so ``rust~py_ort`` is expected to be exact.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from acestep_ort.host.case import Case
from acestep_ort.host.pipeline import Captures
from acestep_parity import paths
from acestep_parity.backends.base import Availability, Backend, register
from acestep_parity.backends.onnx_folder import OnnxFolderBackend, OnnxFolderUnavailable

BUILD_HINT = "build it with `cargo build --release` (or `make test`, which builds it)"
RUN_TIMEOUT_S = 1800


def default_target_dir() -> Path:
    """Where ``cargo`` puts the build: ``$CARGO_TARGET_DIR``, else the repository's ``target/`` (cargo's default;
    the Makefile makes it a link to a per-checkout cache folder)."""
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        return Path(env)
    return paths.REPO_ROOT / "target"


def _built(name: str) -> Path | None:
    """``name`` in the cargo target folder (:func:`default_target_dir`), when built."""
    candidate = default_target_dir() / "release" / name
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def find_binary() -> Path | None:
    """The user CLI: ``$ACESTEP_RUST_GENERATE``, else ``generate`` in the cargo target folder."""
    env = os.environ.get("ACESTEP_RUST_GENERATE")
    if env:
        return Path(env) if Path(env).is_file() else None
    return _built("generate")


def find_harness() -> Path | None:
    """The test-protocol binary (serve, dit-step, vae-decode, tokenize, info): ``$ACESTEP_RUST_HARNESS``, else
    ``acestep-harness`` beside ``$ACESTEP_RUST_GENERATE``, else in the cargo target folder."""
    env = os.environ.get("ACESTEP_RUST_HARNESS")
    if env:
        return Path(env) if Path(env).is_file() else None
    generate = os.environ.get("ACESTEP_RUST_GENERATE")
    if generate:
        beside = Path(generate).with_name("acestep-harness")
        return beside if beside.is_file() else None
    return _built("acestep-harness")


def python_ort_dylib() -> Path | None:
    """The ``libonnxruntime.so.<version>`` inside this Python's onnxruntime package (what py_ort runs)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    capi = Path(onnxruntime.__file__).parent / "capi"
    found = sorted(capi.glob("libonnxruntime.so*"), key=lambda p: -len(p.name))
    return found[0] if found else None


def rust_env() -> dict[str, str]:
    """The environment of the binary: the same ORT library as this Python's, unless the caller chose one."""
    env = dict(os.environ)
    if not env.get("ORT_DYLIB_PATH"):
        dylib = python_ort_dylib()
        if dylib is not None:
            env["ORT_DYLIB_PATH"] = str(dylib)
    return env


class RustRuntimeError(RuntimeError):
    """The binary failed; the message carries its stderr (one line, naming the file and field)."""


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def run_generate(binary: Path, case_path: Path, onnx_dir: Path, workdir: Path,
                 extra: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """Run one case; the dumped captures and the timing JSON the binary prints last."""
    dump = workdir / "captures.npz"
    cmd = [str(binary), "--case", str(case_path), "--onnx-dir", str(onnx_dir), "--out", str(workdir / "out.wav"),
           "--dump", str(dump), "--quiet", "--json", *extra]
    proc = subprocess.run(cmd, cwd=paths.REPO_ROOT, env=rust_env(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise RustRuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-4000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return load_npz(dump), info


class DitServer:
    """One ``acestep-harness serve`` process answering teacher-forced DiT steps (JSON lines over stdin/stdout)."""

    def __init__(self, harness: Path, onnx_dir: Path):
        self.workdir = Path(tempfile.mkdtemp(prefix="acestep-rust-dit-"))
        self.proc = subprocess.Popen([str(harness), "serve", "--onnx-dir", str(onnx_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=rust_env(),
                                     cwd=paths.REPO_ROOT)
        self.lock = threading.Lock()
        self.last_dit_seconds: float | None = None
        hello = self._readline()
        if not hello.get("ready"):
            raise RustRuntimeError(f"acestep-harness serve did not start: {hello}")
        atexit.register(self.close)

    def _readline(self) -> dict:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RustRuntimeError(f"acestep-harness serve ended: {err.strip()[-4000:]}")
        return json.loads(line)

    def lm_teacher(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Teacher-forced LM logits ``[steps, V]`` (the LM graphs open on the first request)."""
        with self.lock:
            out = self.workdir / "lm.npz"
            request = {"lm_teacher": {"prompt_ids": [int(i) for i in np.asarray(prompt_ids).reshape(-1)],
                                      "tokens": [int(i) for i in np.asarray(tokens).reshape(-1)]},
                       "out": str(out)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self._readline()
            if not reply.get("ok"):
                raise RustRuntimeError(f"acestep-harness serve: {reply.get('error')}")
            return load_npz(out)["logits"]

    def step(self, xt, t, encoder_hidden_states, context_latents) -> np.ndarray:
        with self.lock:
            inputs, out = self.workdir / "in.npz", self.workdir / "out.npz"
            np.savez(inputs, hidden_states=np.ascontiguousarray(xt, dtype=np.float32),
                     timestep=np.ascontiguousarray(t, dtype=np.float32),
                     encoder_hidden_states=np.ascontiguousarray(encoder_hidden_states, dtype=np.float32),
                     context_latents=np.ascontiguousarray(context_latents, dtype=np.float32))
            self.proc.stdin.write(json.dumps({"inputs": str(inputs), "out": str(out)}) + "\n")
            self.proc.stdin.flush()
            reply = self._readline()
            if not reply.get("ok"):
                raise RustRuntimeError(f"acestep-harness serve: {reply.get('error')}")
            self.last_dit_seconds = reply.get("dit_seconds")  # the DiT call alone, timed by the binary
            return load_npz(out)["vt"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@register
class RustBackend(OnnxFolderBackend, Backend):
    name = "rust"

    def availability(self) -> Availability:
        if self.binary is None:
            return Availability(False, f"the Rust runtime binary `generate` is not built "
                                       f"(looked in {default_target_dir()}/release); {BUILD_HINT}")
        if self.harness is None:
            return Availability(False, f"the Rust test-protocol binary `acestep-harness` is not built "
                                       f"(looked in {default_target_dir()}/release); {BUILD_HINT}")
        if not rust_env().get("ORT_DYLIB_PATH"):
            return Availability(False, "no libonnxruntime for the Rust runtime: install onnxruntime in this Python "
                                       "(`pip install -e .`) or set ORT_DYLIB_PATH")
        try:
            _ = self.onnx_dir  # exports on first use
        except OnnxFolderUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @property
    def binary(self) -> Path | None:
        if not hasattr(self, "_binary"):
            self._binary = find_binary()
        return self._binary

    @property
    def harness(self) -> Path | None:
        if not hasattr(self, "_harness"):
            self._harness = find_harness()
        return self._harness

    def _run(self, case: Case) -> Captures:
        with tempfile.TemporaryDirectory(prefix=f"acestep-rust-{case.id}-") as tmp:
            arrays, info = run_generate(self.binary, case.path, self.onnx_dir, Path(tmp))
        caps = Captures(arrays=arrays, timings={k: float(v) for k, v in info["stages"].items()})
        caps.timings["ort_run"] = float(info["ort_run_s"])
        caps.timings["end_to_end"] = float(info["generate_s"])
        return caps

    @property
    def server(self) -> DitServer:
        if not hasattr(self, "_server"):
            self._server = DitServer(self.harness, self.onnx_dir)
        return self._server

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        return self.server.step(xt, t, encoder_hidden_states, context_latents)

    def lm_teacher_logits(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.server.lm_teacher(prompt_ids, tokens)
