"""Backends in child processes, one at a time: parity at real size on a 24 GB machine.

A full-size checkpoint is 13.7 GB of weights: the torch reference and an ONNX runtime cannot both be loaded in
the pytest process. With ``pytest --isolate`` (the default for a checkpoint of 4 GiB and more) every backend is
an :class:`IsolatedBackend`: on first use it hands *all* of its work for the session to one child process
(``python -m acestep_parity.backends.isolated JOB_DIR``) that loads the runtime once, then exits:

* every selected case (``run_case``);
* the teacher-forced DiT step of every step of every reference it will be compared with (the golden, and the
  runs of its live references, which are made first: torch, then py_ort, then rust and dll);
* for simple-mode cases, the teacher-forced planner logits of the golden token stream.

Results come back as ``.npz`` files; the tests then read them exactly as from an in-process backend. Children
run one after another under a file lock, so two copies of the model never share memory (pytest-xdist workers
included). A request that was not foreseen (an unknown teacher input) runs in a child of its own: slower, same
numbers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acestep_ort.host.case import Case, load_case
from acestep_ort.host.pipeline import Captures
from acestep_parity import paths
from acestep_parity.backends.base import Availability, Backend, BackendContext

# pytest --isolate's default: a checkpoint of this many bytes or more runs every backend in a child process
ISOLATE_FROM_BYTES = 4 << 30
DIT_TEACHER_KEYS = ("xt", "schedule", "encoder_hidden_states", "context_latents")


def digest(*arrays: np.ndarray) -> str:
    """A key for a teacher input: dtype, shape and bytes of each array."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def dit_step_key(xt: np.ndarray, t: np.ndarray, encoder_hidden_states: np.ndarray,
                 context_latents: np.ndarray) -> str:
    return digest(xt, t, encoder_hidden_states, context_latents)


def teacher_inputs(reference: dict[str, np.ndarray]) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """The teacher-forced DiT inputs of every step of a reference, as test_dit_step builds them."""
    xt, schedule = reference["xt"], reference["schedule"]
    out = []
    for step in range(len(schedule)):
        t = np.full((xt.shape[1],), schedule[step], dtype=np.float32)
        args = (xt[step], t, reference["encoder_hidden_states"], reference["context_latents"])
        out.append((dit_step_key(*args), args))
    return out


@dataclass
class Job:
    """What one child does: ``job.json`` in ``folder`` lists it; the child writes results beside it."""

    folder: Path

    def write(self, spec: dict) -> None:
        (self.folder / "job.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")

    def read(self) -> dict:
        return json.loads((self.folder / "job.json").read_text(encoding="utf-8"))


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class IsolatedBackend(Backend):
    """``inner``'s runs, made in a child process (see the module docstring); availability is asked in-process
    (it loads no model)."""

    def __init__(self, inner: type[Backend], ctx: BackendContext, plan):
        super().__init__(ctx)
        self.inner = inner(ctx)
        self.name = inner.name
        self._plan = plan  # callable(self) -> (cases, dit teacher references, lm teacher inputs)
        self._prepared = False
        self._dit: dict[str, np.ndarray] = {}
        self._lm: dict[str, np.ndarray] = {}
        self.child_seconds: list[float] = []
        self.peak_rss_bytes: int | None = None  # the last child's, and the largest of its own children's
        self.peak_rss_children_bytes: int | None = None

    def availability(self) -> Availability:
        return self.inner.availability()

    # -------------------------------------------------------------------------------------- the child work

    def _child(self, cases: list[Case], dit_refs: list[dict[str, np.ndarray]],
               lm_inputs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        import time

        root = paths.cache_dir() / "isolated"
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{self.name}-{self.ctx.profile}-", dir=root) as tmp:
            job = Job(Path(tmp))
            spec = {"backend": self.name, "profile": self.ctx.profile, "checkpoint_dir": str(self.ctx.checkpoint_dir),
                    "checkpoint_id": self.ctx.checkpoint_id, "cache_dir": str(self.ctx.cache_dir),
                    "cases": [str(c.path) for c in cases], "dit_refs": [], "lm_inputs": []}
            for i, ref in enumerate(dit_refs):
                save_arrays(job.folder / f"dit_ref_{i}.npz", {k: ref[k] for k in DIT_TEACHER_KEYS})
                spec["dit_refs"].append(f"dit_ref_{i}.npz")
            for i, (prompt, tokens) in enumerate(lm_inputs):
                save_arrays(job.folder / f"lm_in_{i}.npz", {"prompt_ids": prompt, "tokens": tokens})
                spec["lm_inputs"].append(f"lm_in_{i}.npz")
            job.write(spec)
            start = time.perf_counter()
            with paths.file_lock(root / ".one-child-at-a-time.lock"):
                proc = subprocess.run([sys.executable, "-m", "acestep_parity.backends.isolated", str(job.folder)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.child_seconds.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name} ({self.ctx.profile}) child process failed (exit {proc.returncode}):\n"
                                   f"{proc.stdout[-4000:]}")
            result = json.loads((job.folder / "result.json").read_text(encoding="utf-8"))
            for case_id, name in result["runs"].items():
                arrays = load_arrays(job.folder / name)
                timings = {k.removeprefix("timing."): float(v) for k, v in arrays.items() if k.startswith("timing.")}
                self._runs[case_id] = Captures({k: v for k, v in arrays.items() if not k.startswith("timing.")},
                                               timings)
            for name in result["dit"]:
                self._dit.update({k: v for k, v in load_arrays(job.folder / name).items()})
            for name in result["lm"]:
                self._lm.update({k: v for k, v in load_arrays(job.folder / name).items()})
            self.peak_rss_bytes = result.get("peak_rss_bytes")
            self.peak_rss_children_bytes = result.get("peak_rss_children_bytes")

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        cases, dit_refs, lm_inputs = self._plan(self)
        self._child(cases, dit_refs, lm_inputs)

    def run_case(self, case: Case) -> Captures:
        self._prepare()
        if case.id not in self._runs:
            self._child([case], [], [])
        return self._runs[case.id]

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        self._prepare()
        key = dit_step_key(xt, t, encoder_hidden_states, context_latents)
        if key not in self._dit and np.all(t == t.flat[0]):  # not foreseen: one step in a child of its own
            self._child([], [{"xt": xt[None], "schedule": np.asarray([t.flat[0]], dtype=np.float32),
                              "encoder_hidden_states": encoder_hidden_states, "context_latents": context_latents}],
                        [])
        if key not in self._dit:
            raise KeyError(f"{self.name}: a teacher-forced DiT input with per-item timesteps {t} is not supported "
                           "by an isolated backend")
        return self._dit[key]

    def lm_teacher_logits(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        self._prepare()
        key = digest(prompt_ids, tokens)
        if key not in self._lm:
            self._child([], [], [(prompt_ids, tokens)])
        return self._lm[key]


# ------------------------------------------------------------------------------------------------ the child


def children_peak_rss_bytes() -> int:
    """The largest peak RSS among this process's finished children (the Rust ``generate`` binary)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_job(folder: Path) -> None:
    """The child's side: build the backend, do the job, write the results."""
    from acestep_parity.backends import REGISTRY
    from acestep_parity.exporters.export import peak_rss_bytes

    job = Job(folder)
    spec = job.read()
    ctx = BackendContext(Path(spec["checkpoint_dir"]), spec["checkpoint_id"], spec["profile"], Path(spec["cache_dir"]))
    backend = REGISTRY[spec["backend"]](ctx)
    availability = backend.availability()
    if not availability.ok:
        raise RuntimeError(f"{spec['backend']} unavailable in the child: {availability.reason}")
    result: dict = {"runs": {}, "dit": [], "lm": []}
    for i, path in enumerate(spec["cases"]):
        case = load_case(Path(path))
        run = backend.run_case(case)
        arrays = dict(run.arrays)
        arrays.update({f"timing.{k}": np.float64(v) for k, v in run.timings.items()})
        save_arrays(folder / f"run_{i}.npz", arrays)
        result["runs"][case.id] = f"run_{i}.npz"
        print(f"{spec['backend']}: ran {case.id}", flush=True)
    for i, name in enumerate(spec["dit_refs"]):
        ref = load_arrays(folder / name)
        out = {key: np.asarray(backend.dit_step(*args)) for key, args in teacher_inputs(ref)}
        save_arrays(folder / f"dit_out_{i}.npz", out)
        result["dit"].append(f"dit_out_{i}.npz")
    for i, name in enumerate(spec["lm_inputs"]):
        data = load_arrays(folder / name)
        logits = backend.lm_teacher_logits(data["prompt_ids"], data["tokens"])
        save_arrays(folder / f"lm_out_{i}.npz", {digest(data["prompt_ids"], data["tokens"]): np.asarray(logits)})
        result["lm"].append(f"lm_out_{i}.npz")
    if hasattr(backend, "close"):  # a helper process (the Rust DiT server) ends, so its peak is counted below
        backend.close()
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["peak_rss_children_bytes"] = children_peak_rss_bytes()
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    run_job(Path(sys.argv[1]))
