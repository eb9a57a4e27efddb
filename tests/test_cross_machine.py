"""The golden gates hold off this machine's default kernels: the reference re-run under another ISA setting.

The golden may come from another CPU; its gates (``*~golden`` in cases/tolerances.json) were set from cross-vendor
figures with margin (docs/parity_ops.md). This test checks that margin on every CI run instead of hoping for it:
the reference runs in a fresh process with AVX2 kernels and one thread on an AVX-512 machine (the scalar ATen
path and oneDNN SSE4.1 on an AVX2 one) and must pass the ``torch~golden`` gates on every case and tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acestep_parity import spread
from acestep_parity.cases import Case

GATE_PAIR = "torch~golden"
TENSORS = ("text_hidden_states", "encoder_hidden_states", "vt", "xt", "pred_latents", "audio")


@pytest.fixture(scope="session")
def other_isa_runs(parity_session, tmp_path_factory) -> tuple[str, dict[str, Path]]:
    """One fresh-process reference run of every selected text2music case under :func:`spread.other_isa_setting`."""
    pytest.importorskip("torch", reason="the reference needs the reference extras: pip install -e '.[reference]'")
    setting = spread.other_isa_setting()
    cases = [c for c in parity_session.cases if isinstance(c, Case) and c.task == "text2music"]
    out = tmp_path_factory.mktemp(f"isa-{setting.name}")
    cases_dir = cases[0].path.parent if cases else Path(parity_session.config.getoption("--cases-dir"))
    files = spread.run_reference(setting, parity_session.checkpoint[0], cases_dir, [c.id for c in cases], out)
    return setting.name, files


@pytest.mark.parity
@pytest.mark.tensors(*TENSORS)
def test_reference_under_other_isa(case, runnable_case, golden, tensor, other_isa_runs, check, record_property):
    """torch under another ISA/thread setting vs the golden, with the golden gates (pair ``torch[<setting>]~golden``)."""
    setting, files = other_isa_runs
    record_property("isa_setting", setting)
    if tensor not in golden:
        pytest.skip(f"the golden of {case.id} omits {tensor} (size limit)")
    with np.load(files[case.id]) as data:
        cand = data[tensor]
    check(golden[tensor], cand, tensor=tensor, pair=f"torch[{setting}]~golden", gate_pair=GATE_PAIR,
          profile="fp32", case=case)
