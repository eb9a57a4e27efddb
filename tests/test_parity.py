"""Backend-vs-golden parity: per case, per stage tensor, per DiT step (teacher-forced and free-running), audio.

Every test is parametrized by the plugin (backend x profile x case [x step] [x tensor] [x mode]) and gated by
``cases/tolerances.json`` through the ``check`` fixture, which records the measured values for the reports.
"""

from __future__ import annotations

import numpy as np
import pytest

from acestep_parity.plugin import STAGE_TENSORS


def _pair(backend) -> str:
    return f"{backend.name}~golden"


@pytest.mark.parity
@pytest.mark.tensors(*STAGE_TENSORS)
def test_stage(backend, profile, case, runnable_case, golden, tensor, check):
    """Each capture point before the denoising loop, and the pre-VAE latent, against the golden."""
    run = backend.run_case(runnable_case)
    check(golden[tensor], run[tensor], tensor=tensor, pair=_pair(backend), profile=profile, case=case)


@pytest.mark.parity
@pytest.mark.tensors("vt", "xt")
@pytest.mark.modes("teacher", "free")
def test_dit_step(backend, profile, case, runnable_case, golden, step, tensor, mode, check):
    """One denoising step. teacher: the reference xt[i] is fed in, vt[i] compared (model error only);
    free: the backend's own loop, vt[i] and xt[i] compared (accumulated drift)."""
    if mode == "teacher":
        batch = golden["xt"].shape[1]
        t = np.full((batch,), golden["schedule"][step], dtype=np.float32)
        cand = backend.dit_step(golden["xt"][step], t, golden["encoder_hidden_states"], golden["context_latents"])
    else:
        cand = backend.run_case(runnable_case)[tensor][step]
    check(golden[tensor][step], cand, tensor=tensor, pair=_pair(backend), profile=profile, case=case, step=step,
          mode=mode)


@pytest.mark.parity
def test_audio(backend, profile, case, runnable_case, golden, check):
    """Final waveform: exact sample count first, then SNR / Pearson / max_abs from the tolerance file."""
    run = backend.run_case(runnable_case)
    check(golden["audio"], run["audio"], tensor="audio", pair=_pair(backend), profile=profile, case=case)
