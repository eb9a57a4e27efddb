"""The backend interface and registry: a backend runs a case and returns captures; tests never special-case one.

A backend implements :class:`Backend`: ``availability()`` says whether it can run here and, if not, why and the
command that builds it; ``run_case`` returns every capture point; ``dit_step`` runs one DiT evaluation on given
inputs (the teacher-forced per-step tests use it). Backends register themselves by name in :data:`REGISTRY`
(importing :mod:`acestep_parity.backends` imports every adapter module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acestep_ort.host.case import Case
from acestep_ort.host.pipeline import Captures

PROFILES = ("fp32", "fp16", "int8_dynamic", "int8_static")
# Every backend, reference first; the registry may hold fewer where an adapter cannot be imported.
BACKEND_NAMES = ("torch", "py_ort", "rust", "dll")


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
        from acestep_ort.host.lm_planner import teacher_forced_logits

        return teacher_forced_logits(self.engine.lm, prompt_ids, tokens)


class EngineBackend(Backend):
    """A backend whose runtime is a Python engine on the shared host orchestration (torch, py_ort): subclasses
    provide ``engine``; text2music and simple mode runs and the teacher-forced DiT step go through it."""

    @property
    def engine(self):
        raise NotImplementedError

    def _run(self, case: Case) -> Captures:
        if case.task == "simple_mode":
            return self.engine.generate_simple(case)
        return self.engine.generate(case.request())

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        return self.engine.dit(xt, t, encoder_hidden_states, context_latents)


REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: each backend module registers its adapter under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls
