"""``pytest --isolate``: a backend whose session work runs in one child process gives the in-process numbers
exactly (same machine, same code), for runs, teacher-forced DiT steps and planner logits (docs/realsize.md)."""

from __future__ import annotations

import numpy as np
import pytest

from acestep_ort.host.case import load_case
from acestep_parity import paths
from acestep_parity.backends import REGISTRY, BackendContext
from acestep_parity.backends.isolated import ISOLATE_FROM_BYTES, IsolatedBackend, teacher_inputs

pytestmark = pytest.mark.xdist_group("isolated")


def _ctx(parity_session) -> BackendContext:
    directory, _, cid = parity_session.checkpoint
    return BackendContext(directory, cid, "fp32", paths.cache_dir())


def test_isolated_py_ort_equals_in_process(parity_session, record_property):
    inner = parity_session.backend("py_ort", "fp32")
    if isinstance(inner, IsolatedBackend) or not inner.availability().ok:
        pytest.skip("needs the in-process py_ort backend (tiny checkpoint)")
    case = load_case(paths.CASES_DIR / "text2music_02.json")
    expected = inner.run_case(case)
    steps = teacher_inputs(expected.arrays)

    def plan(backend):
        return [case], [expected.arrays], []

    isolated = IsolatedBackend(REGISTRY["py_ort"], _ctx(parity_session), plan)
    got = isolated.run_case(case)
    assert len(isolated.child_seconds) == 1, "the whole plan must run in one child"
    assert isolated.peak_rss_bytes and isolated.peak_rss_bytes > 0
    record_property("child_seconds", round(isolated.child_seconds[0], 2))
    assert sorted(got.arrays) == sorted(expected.arrays)
    for name, value in expected.arrays.items():
        assert np.array_equal(got[name], value), name
    for _, args in steps:
        assert np.array_equal(isolated.dit_step(*args), inner.dit_step(*args))
    assert len(isolated.child_seconds) == 1, "foreseen teacher steps must not start another child"
    # a step the plan did not foresee runs in a child of its own, with the same result
    xt = expected["xt"][1] * np.float32(0.5)
    t = np.full((xt.shape[0],), expected["schedule"][1], dtype=np.float32)
    args = (xt, t, expected["encoder_hidden_states"], expected["context_latents"])
    assert np.array_equal(isolated.dit_step(*args), inner.dit_step(*args))
    assert len(isolated.child_seconds) == 2


def test_isolate_is_the_default_only_for_large_checkpoints(parity_session):
    from acestep_parity.exporters.export import checkpoint_bytes

    if parity_session.config.getoption("--isolate") is not None:
        pytest.skip("--isolate / --no-isolate given")
    assert parity_session.isolate == (checkpoint_bytes(parity_session.checkpoint[0]) >= ISOLATE_FROM_BYTES)
