"""Parity per comparison pair: per case, per stage tensor, per DiT step (teacher-forced and free-running), audio.

Every test is parametrized by the plugin (pair x profile x case [x step] [x tensor] [x mode]). A pair is
``candidate~reference``: live pairs (``py_ort~torch``, ``rust~py_ort``, ``rust~torch``, ``dll~py_ort``,
``dll~torch``) compare two runs made in this session on this machine; golden pairs (``torch~golden``, …) compare
with the frozen golden. Gates come from ``cases/tolerances.json`` through the ``check`` fixture, which records the
measured values for the reports.
"""

from __future__ import annotations

import numpy as np
import pytest

from acestep_parity.parametrize import STAGE_TENSORS


def _ref(reference: dict[str, np.ndarray], tensor: str, pair, case) -> np.ndarray:
    if tensor not in reference:
        pytest.skip(f"{pair.reference} holds no {tensor} for {case.id} (the golden omits captures larger than "
                    "its size limit; the live pairs compare them)")
    return reference[tensor]


@pytest.mark.parity
@pytest.mark.tensors(*STAGE_TENSORS)
def test_stage(pair, backend, profile, case, runnable_case, reference, tensor, check):
    """Each capture point before the denoising loop, and the pre-VAE latent."""
    expected = _ref(reference, tensor, pair, case)
    run = backend.run_case(runnable_case)
    check(expected, run[tensor], tensor=tensor, pair=pair.name, profile=profile, case=case)


@pytest.mark.parity
@pytest.mark.tensors("vt", "xt")
@pytest.mark.modes("teacher", "free")
def test_dit_step(pair, backend, profile, case, runnable_case, reference, step, tensor, mode, check):
    """One denoising step. teacher: the reference's xt[i] is fed in, vt[i] compared (model error only);
    free: the candidate's own loop, vt[i] and xt[i] compared (accumulated drift)."""
    expected = _ref(reference, tensor, pair, case)[step]
    if mode == "teacher":
        xt = _ref(reference, "xt", pair, case)
        t = np.full((xt.shape[1],), reference["schedule"][step], dtype=np.float32)
        cand = backend.dit_step(xt[step], t, _ref(reference, "encoder_hidden_states", pair, case),
                                _ref(reference, "context_latents", pair, case))
    else:
        cand = backend.run_case(runnable_case)[tensor][step]
    check(expected, cand, tensor=tensor, pair=pair.name, profile=profile, case=case, step=step, mode=mode)


@pytest.mark.parity
def test_audio(pair, backend, profile, case, runnable_case, reference, check):
    """Final waveform: exact sample count first, then SNR / Pearson / max_abs from the tolerance file."""
    expected = _ref(reference, "audio", pair, case)
    run = backend.run_case(runnable_case)
    check(expected, run["audio"], tensor="audio", pair=pair.name, profile=profile, case=case)
