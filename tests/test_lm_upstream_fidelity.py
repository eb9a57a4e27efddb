"""Fidelity of the planner port against upstream ACE-Step 1.5's own LM code (``LLMHandler``, pt backend).

This is what proves the FSM port: a hand-written FSM that only agrees with itself proves nothing. Where upstream's
source is available outside the repository, the tests import it and

1. run ``LLMHandler.create_sample_from_query`` (greedy, ``temperature=0``) on the checkpoint's LM for every
   simple_mode case and assert the same generated token stream, the same output text and the same metadata dict
   as the project's reference planner (``acestep_parity.torch_ref`` + ``acestep_ort.host``);
2. drive upstream's ``MetadataConstrainedLogitsProcessor`` and the project's :class:`LmFsm` with the same seeded
   random logits (no model: every branch the logits lead to) and assert the allowed-token mask and the kept
   values equal at every step.

How to enable: put upstream's ``acestep/`` package (commit 82252c2; the pt backend imports
``llm_inference.py``, ``constrained_logits_processor.py``, ``constants.py``, ``gpu_config.py``,
``llm_backend_compat.py`` and ``__init__.py``) in a folder outside the repository and set
``ACESTEP_UPSTREAM_SRC`` to that folder, e.g. ``git --git-dir=<mirror> archive 82252c2 acestep`` or
``git show 82252c2:acestep/<file>.py``; ``pyyaml``, ``tqdm`` and ``loguru`` are upstream's imports (a
``logging`` stand-in replaces ``loguru`` when it is not installed). Upstream reads its genres list from its own
package folder; the tests point its processor at the checkpoint's list instead and pin ``max_duration`` per case
(upstream derives it from the GPU). Select with ``-k upstream_lm``.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from acestep_ort.host.case import discover_cases
from acestep_parity import paths

ENV = "ACESTEP_UPSTREAM_SRC"
UPSTREAM_FILES = ("llm_inference.py", "constrained_logits_processor.py", "constants.py", "gpu_config.py",
                  "llm_backend_compat.py", "__init__.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lm_case" in metafunc.fixturenames:
        cases = [c for c in discover_cases(paths.CASES_DIR, metafunc.config.getoption("case_globs"))
                 if c.task == "simple_mode"]
        metafunc.parametrize("lm_case", [pytest.param(c, id=f"upstream_lm-{c.id}") for c in cases])


def _hint() -> str:
    return (f"set {ENV} to a folder holding upstream ACE-Step 1.5's acestep/ package at 82252c2 (at least "
            f"{', '.join(UPSTREAM_FILES)}), e.g. `git --git-dir=<clone>/.git archive 82252c2 acestep | tar -x -C DIR`")


@pytest.fixture(scope="module")
def upstream_pkg():
    src = os.environ.get(ENV)
    if not src:
        pytest.skip(f"upstream LM fidelity check needs upstream's source: {_hint()}")
    folder = Path(src) / "acestep"
    missing = [f for f in UPSTREAM_FILES if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"{folder} lacks {', '.join(missing)}: {_hint()}")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("yaml")
    pytest.importorskip("tqdm")
    added = []
    if "loguru" not in sys.modules:
        try:
            import loguru  # noqa: F401
        except ImportError:
            import logging

            shim = types.ModuleType("loguru")
            shim.logger = logging.getLogger("upstream-loguru")
            sys.modules["loguru"] = shim
            added.append("loguru")
    sys.path.insert(0, str(Path(src)))
    try:
        from acestep import constrained_logits_processor, llm_inference
    finally:
        sys.path.remove(str(Path(src)))
    yield types.SimpleNamespace(llm_inference=llm_inference, clp=constrained_logits_processor)
    for name in added:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def lm_root(checkpoint_dir):
    from acestep_parity.checkpoint import check_lm_layout

    check_lm_layout(checkpoint_dir)
    return checkpoint_dir


@pytest.fixture(scope="module")
def upstream_handler(upstream_pkg, lm_root):
    import torch

    from acestep_parity.checkpoint import LM_DIR

    handler = upstream_pkg.llm_inference.LLMHandler()
    handler.disable_tqdm = True
    status, ok = handler.initialize(checkpoint_dir=str(lm_root), lm_model_path=LM_DIR, backend="pt", device="cpu",
                                    dtype=torch.float32)
    assert ok, status
    proc = handler.constrained_processor
    proc.genres_vocab_path = str(lm_root / LM_DIR / "genres_vocab.txt")
    proc.genres_vocab_mtime = 0.0
    proc._load_genres_vocab()
    assert proc.genres_vocab, "upstream's processor did not load the checkpoint's genres list"
    captured: dict = {}
    original = handler._generate_with_constrained_decoding

    def capture(*args, **kwargs):
        out = original(*args, **kwargs)
        captured["ids"] = out[0].tolist()
        captured["prompt_len"] = int(kwargs["input_ids"].shape[1])
        return out

    handler._generate_with_constrained_decoding = capture
    handler.captured = captured
    return handler


@pytest.fixture(scope="module")
def reference_lm(lm_root):
    from acestep_parity.torch_ref.lm import TorchLm

    return TorchLm(lm_root)


def test_upstream_lm_create_sample(upstream_handler, reference_lm, lm_root, lm_case, record_property):
    """Same prompt, token stream, text and metadata as upstream's ``create_sample_from_query`` (greedy)."""
    from acestep_ort.host import lm_planner
    from acestep_parity.torch_ref.planner import plan_case

    upstream_handler.constrained_processor.set_max_duration(int(lm_case.duration))
    vocal = lm_planner.case_vocal_language(lm_case)
    metadata, status = upstream_handler.create_sample_from_query(
        lm_case.query, instrumental=lm_case.instrumental, vocal_language=vocal, temperature=0.0)
    assert metadata, status
    cap = upstream_handler.captured
    up_prompt, up_tokens = cap["ids"][: cap["prompt_len"]], cap["ids"][cap["prompt_len"]:]
    ours = plan_case(reference_lm, lm_root, lm_case)
    record_property("tokens", len(up_tokens))
    assert list(ours.prompt_ids) == up_prompt, "prompt token ids differ from upstream's"
    assert list(ours.tokens) == up_tokens, (
        f"token stream differs from upstream's at step "
        f"{next(i for i, (a, b) in enumerate(zip(list(ours.tokens) + [-1], up_tokens + [-1], strict=False)) if a != b)}")
    assert ours.metadata == metadata, f"metadata differ:\nours     {ours.metadata}\nupstream {metadata}"
    assert json.dumps(ours.sample, sort_keys=True)  # serializable


@pytest.mark.parametrize("seed", range(6))
def test_upstream_lm_fsm_on_random_logits(upstream_pkg, reference_lm, lm_root, seed):
    """Upstream's processor and the port, fed the same random logits: equal masks and values at every step."""
    import torch

    from acestep_ort.host.lm_fsm import FsmTables, LmFsm, load_genres
    from acestep_parity.checkpoint import LM_DIR

    genres_path = lm_root / LM_DIR / "genres_vocab.txt"
    max_duration = (30, 120, 600)[seed % 3]
    language = (None, "fr", "xx")[seed % 3]
    hf = reference_lm.tokenizer.hf
    proc = upstream_pkg.clp.MetadataConstrainedLogitsProcessor(
        tokenizer=hf, enabled=True, debug=False, genres_vocab_path=str(genres_path), max_duration=max_duration)
    proc.reset()
    proc.set_target_duration(None)
    proc.set_user_metadata({"language": language} if language else None)
    proc.set_stop_at_reasoning(False)
    proc.set_skip_genres(False)
    proc.set_skip_caption(False)
    proc.set_skip_language(False)
    proc.set_generation_phase("understand")
    tables = FsmTables(reference_lm.tokenizer, load_genres(genres_path.read_text(encoding="utf-8")), max_duration)
    fsm = LmFsm(tables, user_metadata={"language": language} if language else {})
    rng = np.random.default_rng(seed)
    vocab = len(hf)
    ids = [1, 2, 3]
    nl = tables.newline_token
    for step in range(1500):
        raw = rng.standard_normal(vocab).astype(np.float32) * 3
        raw[nl] += 4.0 + 2.0 * (step % 7 == 0)  # newlines often enough to leave the caption early
        raw[tables.eos_token_id] -= 6.0
        up = proc(torch.tensor([ids]), torch.from_numpy(raw.copy()).reshape(1, -1))[0].numpy()
        ours = fsm.process(ids, raw)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(up), err_msg=f"mask differs at step {step}")
        np.testing.assert_array_equal(ours, up, err_msg=f"values differ at step {step}")
        token = int(np.argmax(ours))
        proc.update_state(token)
        fsm.update(token)
        assert fsm.state.name == proc.state.name, f"state differs after step {step}"
        ids.append(token)
        if token == tables.eos_token_id:
            break
