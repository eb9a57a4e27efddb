"""The backend interface and registry: a backend runs a case and returns captures; tests never special-case one.

A backend implements :class:`Backend`: ``availability()`` says whether it can run here and, if not, why and the
command that builds it; ``run_case`` returns every capture point; ``dit_step`` runs one DiT evaluation on given
inputs (the teacher-forced per-step tests use it). Backends register themselves by name in :data:`REGISTRY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acestep_parity.cases import Case
from acestep_parity.host.pipeline import Captures

PROFILES = ("fp32", "fp16", "int8_dynamic", "int8_static")


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


@dataclass
class BackendContext:
    """What a backend may need to build itself: the checkpoint, the profile and a cache folder."""

    checkpoint_dir: Path
    checkpoint_id: str
    profile: str
    cache_dir: Path


class Backend:
    """Base class; subclasses set ``name`` and implement the three methods."""

    name = "base"
    profiles: tuple[str, ...] = ("fp32",)

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self._runs: dict[str, Captures] = {}

    def availability(self) -> Availability:
        raise NotImplementedError

    def _run(self, case: Case) -> Captures:
        raise NotImplementedError

    def run_case(self, case: Case) -> Captures:
        """Run ``case`` once per session; later calls return the cached captures."""
        if case.id not in self._runs:
            self._runs[case.id] = self._run(case)
        return self._runs[case.id]

    def dit_step(self, xt: np.ndarray, t: np.ndarray, encoder_hidden_states: np.ndarray,
                 context_latents: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def lm_teacher_logits(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Planner logits of every step with the reference tokens fed in (simple mode), ``[steps, V]``."""
        from acestep_parity.host.planner import teacher_forced_logits

        return teacher_forced_logits(self.engine.lm, prompt_ids, tokens)


class TorchBackend(Backend):
    """The PyTorch reference (``runtimes.torch_ref``)."""

    name = "torch"

    def availability(self) -> Availability:
        if self.ctx.profile != "fp32":
            return Availability(False, f"the PyTorch reference is fp32 only (profile {self.ctx.profile})")
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"{exc}; install with `pip install -e '.[reference]'`")
        return Availability(True)

    @property
    def engine(self):
        if not hasattr(self, "_engine"):
            from runtimes.torch_ref import load_engine

            self._engine = load_engine(self.ctx.checkpoint_dir)
        return self._engine

    def _run(self, case: Case) -> Captures:
        if case.task == "simple_mode":
            return self.engine.generate_simple(case)
        return self.engine.generate(case.request())

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        return self.engine.dit(xt, t, encoder_hidden_states, context_latents)


class NotBuiltBackend(Backend):
    """A registered backend whose runtime does not exist in this checkout yet; it always skips, saying so."""

    how_to_build = ""

    def availability(self) -> Availability:
        return Availability(False, self.how_to_build)


class RustBackend(NotBuiltBackend):
    name = "rust"
    how_to_build = ("the Rust ORT runtime (rust/) is not implemented in this checkout yet; once it is: "
                    "`cargo build --release` in rust/")


class DllBackend(NotBuiltBackend):
    name = "dll"
    how_to_build = ("the Rust C-ABI library (rust/, cdylib) is not implemented in this checkout yet; once it is: "
                    "`cargo build --release` in rust/")


REGISTRY: dict[str, type[Backend]] = {cls.name: cls for cls in (TorchBackend, RustBackend, DllBackend)}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator for backends defined elsewhere (e.g. ``runtimes.py_ort``)."""
    REGISTRY[cls.name] = cls
    return cls


def load_optional_backends() -> None:
    """Backends living in runtimes/ register themselves on import; a missing one simply stays unregistered."""
    try:
        import runtimes.py_ort.backend  # noqa: F401
    except ImportError:
        pass
