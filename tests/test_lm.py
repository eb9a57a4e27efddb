"""Simple-mode planner parity: per case and per decode step, against the golden and between live backends.

Per step (``-k 'lm and step'``), for every backend: the teacher-forced logits (the golden token prefix fed in; the
golden keeps the top-8 raw logits per step, compared at the golden's ids), the free-running token id and the
FSM's allowed-token mask (digest, exact). Per case: output text and parsed metadata (exact), the live
``py_ort~torch`` teacher-forced logits over the whole vocabulary, and the smallest top-1/top-2 margin of the
reference against the measured logits error. The text2music stages of simple-mode cases run through
``tests/test_parity.py`` like any text2music case.

A token flip is an ``LM`` failure; when the reference's top-1/top-2 margin at that step is below the logits gate
it is reported as a near tie (margin in the message), never hidden.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from parity_test_helpers import backend_or_skip

from acestep_ort.host.case import Case
from acestep_parity import parity
from acestep_parity.fixtures import planner_record
from acestep_parity.fixtures import session_of as _session
from acestep_parity.parametrize import (
    GOLDEN,
    LIVE_PAIRS,
    Axis,
    Pair,
    case_params,
    named_axis,
    selected_backends,
    step_axis,
)

PROFILE = "fp32"


def _golden_steps(session, case: Case) -> list[int] | None:
    try:
        from acestep_parity.checkpoint import has_lm

        if not has_lm(session.checkpoint[0]):
            return None
        store = session.golden
        if not store.exists():
            return None
        arrays = store.load(case.id, case.sha256, planner=planner_record(session, case))
    except Exception:  # a stale/missing golden skips (with the freeze command) in the fixture, not here
        return None
    return list(range(len(arrays["lm_tokens"])))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """[backend x] simple-mode case [x golden decode step], on the parity tests' axes (``parametrize.py``):
    ids ``backend-case-lmstepN``."""
    names = metafunc.fixturenames
    if "lm_case" not in names:
        return
    session = _session(metafunc.config)
    cases = [c for c in session.cases if c.task == "simple_mode"]
    with_backend = "lm_backend_name" in names
    heads = [named_axis(selected_backends(metafunc.config))] if with_backend else []

    def steps(case: Case) -> list[Axis]:
        return [step_axis(_golden_steps(session, case) or [None], "lmstep")] if "lm_step" in names else []

    params = case_params(heads, cases, steps)
    if not params:
        pytest.skip("no simple_mode case selected")
    metafunc.parametrize(["lm_backend_name"] * with_backend + ["lm_case"] + ["lm_step"] * ("lm_step" in names),
                         params)


def _backend(parity_session, name: str):
    return backend_or_skip(parity_session, name, PROFILE)


@pytest.fixture
def lm_ready(parity_session, lm_case):
    from acestep_parity.checkpoint import has_lm

    if not has_lm(parity_session.checkpoint[0]):
        pytest.skip(f"{lm_case.id}: the checkpoint has no acestep-5Hz-lm-0.6B/ (the planner)")
    return lm_case


@pytest.fixture
def lm_backend(parity_session, lm_backend_name, lm_ready):
    return _backend(parity_session, lm_backend_name)


@pytest.fixture
def lm_golden(golden_store, parity_session, lm_ready):
    from acestep_parity.golden import GoldenError, freeze_command

    if not golden_store.exists():
        pytest.skip(f"no golden for checkpoint {golden_store.checkpoint_id}: run "
                    f"`{freeze_command(golden_store.checkpoint_dir)}` (or pytest --update-golden)")
    try:
        return golden_store.load(lm_ready.id, lm_ready.sha256, planner=planner_record(parity_session, lm_ready))
    except GoldenError as exc:
        pytest.fail(str(exc), pytrace=False)


def _teacher(backend, case: Case, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Teacher-forced logits of every step, computed once per backend and case."""
    cache = backend.__dict__.setdefault("_lm_teacher", {})
    if case.id not in cache:
        cache[case.id] = backend.lm_teacher_logits(prompt_ids, tokens)
    return cache[case.id]


def _pair(backend) -> str:
    return Pair(backend.name, GOLDEN).name


@pytest.mark.parity
def test_lm_step(lm_backend, lm_case, lm_step, lm_golden, tolerances, check, record_property):
    """One decode step: teacher-forced top-k logits, then the free-running token id and the FSM mask digest."""
    if lm_step is None:
        pytest.skip(f"{lm_case.id}: no golden token stream to enumerate steps from")
    pair = _pair(lm_backend)
    ref_ids, ref_vals = lm_golden["lm_topk_ids"][lm_step], lm_golden["lm_topk_logits"][lm_step]
    teacher = _teacher(lm_backend, lm_case, lm_golden["lm_prompt_ids"], lm_golden["lm_tokens"])
    check(ref_vals, teacher[lm_step][ref_ids], tensor="lm_topk_logits", pair=pair, profile=PROFILE, case=lm_case,
          step=lm_step, mode="teacher")
    run = lm_backend.run_case(lm_case)
    tokens, digests = run["lm_tokens"], run["lm_mask_digests"]
    margin = float(lm_golden["lm_margins"][lm_step])
    gate = tolerances.gates(pair, PROFILE, "lm_topk_logits", lm_case.id)["max_abs"].value
    record_property("margin", margin)
    if lm_step >= len(tokens):
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id} step {lm_step}: {lm_backend.name} stopped after {len(tokens)} tokens, the "
                    f"golden has {len(lm_golden['lm_tokens'])}", pytrace=False)
    if int(tokens[lm_step]) != int(lm_golden["lm_tokens"][lm_step]):
        record_property("failure_tag", "LM")
        tie = (f"NEAR TIE: the reference's top-1/top-2 margin {margin:.3g} is below the logits gate {gate:g}"
               if margin < gate else f"not a near tie (reference margin {margin:.3g}, logits gate {gate:g})")
        pytest.fail(f"[LM] {lm_case.id} step {lm_step}: {lm_backend.name} chose token {int(tokens[lm_step])}, the "
                    f"golden {int(lm_golden['lm_tokens'][lm_step])}; {tie}", pytrace=False)
    check(lm_golden["lm_mask_digests"][lm_step: lm_step + 1], digests[lm_step: lm_step + 1],
          tensor="lm_mask_digests", pair=pair, profile=PROFILE, case=lm_case, step=lm_step, mode="free")


@pytest.mark.parity
def test_lm_stream_and_metadata(lm_backend, lm_case, lm_golden, check, record_property):
    """The whole token stream, output text and parsed metadata (create_sample's dict) equal the golden."""
    run = lm_backend.run_case(lm_case)
    pair = _pair(lm_backend)
    record_property("tokens", int(len(run["lm_tokens"])))
    if len(run["lm_tokens"]) != len(lm_golden["lm_tokens"]):
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id}: {len(run['lm_tokens'])} tokens vs golden {len(lm_golden['lm_tokens'])}",
                    pytrace=False)
    check(lm_golden["lm_tokens"], run["lm_tokens"], tensor="lm_tokens", pair=pair, profile=PROFILE, case=lm_case)
    check(lm_golden["lm_mask_digests"], run["lm_mask_digests"], tensor="lm_mask_digests", pair=pair,
          profile=PROFILE, case=lm_case)
    ours, ref = json.loads(str(run["lm_metadata"])), json.loads(str(lm_golden["lm_metadata"]))
    if ours != ref or str(run["lm_text"]) != str(lm_golden["lm_text"]):
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id}: parsed metadata/text differ:\n{ours}\nvs golden\n{ref}", pytrace=False)


@pytest.mark.parity
def test_lm_live_teacher_logits(parity_session, lm_case, lm_ready, lm_golden, tolerances, check, record_property):
    """``py_ort~torch`` on one machine: full-vocabulary teacher-forced logits of every step, and the reference's
    smallest top-1/top-2 margin against the measured error (a near tie would make token parity luck)."""
    torch_backend = _backend(parity_session, "torch")
    ort_backend = _backend(parity_session, "py_ort")
    prompt, tokens = lm_golden["lm_prompt_ids"], lm_golden["lm_tokens"]
    ref = _teacher(torch_backend, lm_case, prompt, tokens)
    cand = _teacher(ort_backend, lm_case, prompt, tokens)
    rows = check(ref, cand, tensor="lm_logits", pair="py_ort~torch", profile=PROFILE, case=lm_case, mode="teacher")
    error = next(r.value for r in rows if r.metric == "max_abs")
    margin = float(np.min(lm_golden["lm_margins"]))
    record_property("min_margin", margin)
    record_property("margin_over_error", margin / max(error, 1e-12))
    gate = tolerances.gates("py_ort~torch", PROFILE, "lm_logits", lm_case.id, scopes=parity_session.scopes)
    assert margin > 10 * gate["max_abs"].value, (
        f"[LM] {lm_case.id}: smallest top-1/top-2 margin {margin:.3g} is within 10x of the logits gate: token "
        "parity would be a near tie")


def test_lm_failure_stage_is_lm():
    for tensor in ("lm_tokens", "lm_topk_logits", "lm_mask_digests", "lm_logits", "logits", "present_keys"):
        assert parity.TENSOR_STAGE[tensor] == "LM"


# Live LM pairs besides py_ort~torch (above): the Rust runtime (and the C ABI host) against py_ort and torch.
LM_LIVE_PAIRS = [Pair(c, r) for c, r in LIVE_PAIRS if c in ("rust", "dll")]


@pytest.mark.parity
@pytest.mark.parametrize("lm_pair", LM_LIVE_PAIRS, ids=[p.name for p in LM_LIVE_PAIRS])
def test_lm_live_pair(parity_session, lm_pair: Pair, lm_case, lm_ready, lm_golden, tolerances, check, record_property):
    """``rust~py_ort`` (same libonnxruntime: exact) and ``rust~torch``: full-vocabulary teacher-forced logits of
    every step (the golden stream fed in), then the free-running token stream, mask digests, text and metadata.
    Records the smallest reference margin over the largest logits error."""
    if lm_pair.candidate not in selected_backends(parity_session.config):
        pytest.skip(f"backend {lm_pair.candidate} not selected (--backend)")
    cand, ref = _backend(parity_session, lm_pair.candidate), _backend(parity_session, lm_pair.reference)
    prompt, tokens = lm_golden["lm_prompt_ids"], lm_golden["lm_tokens"]
    rows = check(_teacher(ref, lm_case, prompt, tokens), _teacher(cand, lm_case, prompt, tokens), tensor="lm_logits",
                 pair=lm_pair.name, profile=PROFILE, case=lm_case, mode="teacher")
    error = next(r.value for r in rows if r.metric == "max_abs")
    margin = float(np.min(lm_golden["lm_margins"]))
    record_property("min_margin", margin)
    record_property("max_teacher_logits_error", error)
    ours, theirs = cand.run_case(lm_case), ref.run_case(lm_case)
    if len(ours["lm_tokens"]) != len(theirs["lm_tokens"]) or not np.array_equal(ours["lm_tokens"],
                                                                                 theirs["lm_tokens"]):
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id}: {lm_pair.name} token streams differ:\n{ours['lm_tokens']}\nvs\n"
                    f"{theirs['lm_tokens']}", pytrace=False)
    if not np.array_equal(ours["lm_mask_digests"], theirs["lm_mask_digests"]):
        bad = [i for i, (a, b) in enumerate(zip(ours["lm_mask_digests"], theirs["lm_mask_digests"], strict=True)) if a != b]
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id}: {lm_pair.name} FSM masks differ at steps {bad}", pytrace=False)
    if str(ours["lm_metadata"]) != str(theirs["lm_metadata"]) or str(ours["lm_text"]) != str(theirs["lm_text"]):
        record_property("failure_tag", "LM")
        pytest.fail(f"[LM] {lm_case.id}: {lm_pair.name} text/metadata differ:\n{ours['lm_metadata']}\nvs\n"
                    f"{theirs['lm_metadata']}", pytrace=False)
