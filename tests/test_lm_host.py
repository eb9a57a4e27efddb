"""The 5 Hz LM planner's host logic and the synthetic LM: FSM rules, prompt, parsing, sampler, loader.

Rules are checked against upstream's behaviour as read in ``acestep/constrained_logits_processor.py`` and
``acestep/llm_inference.py`` (82252c2); ``tests/test_lm_upstream_fidelity.py`` checks the same against upstream's
running code where it is available.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from parity_test_helpers import TORCH_BLOCKER, backend_or_skip

from acestep_ort.host import lm_parse, lm_planner, lm_prompt
from acestep_ort.host.lm_fsm import FsmTables, LmFsm, S, load_genres
from acestep_ort.host.lm_tokenizer import GENRES_FILE, LM_DIR, FastTokenizer


@pytest.fixture(scope="module")
def lm_dir(checkpoint_dir):
    return checkpoint_dir / LM_DIR


@pytest.fixture(scope="module")
def tok(lm_dir):
    return FastTokenizer(lm_dir)


@pytest.fixture(scope="module")
def tables(tok, lm_dir):
    return FsmTables(tok, load_genres((lm_dir / GENRES_FILE).read_text(encoding="utf-8")), 30)


def _ids(tok, text):
    return tok.encode(text)


def _feed(fsm, tok, text):
    """Force ``text``'s tokens through the FSM (process + update), returning the per-step allowed sets."""
    allowed = []
    for t in tok.encode(text):
        logits = np.zeros(len(tok), dtype=np.float32)
        logits[t] = 100.0
        out = fsm.process([], logits)
        allowed.append(set(np.flatnonzero(np.isfinite(out)).tolist()))
        assert np.isfinite(out[t]), f"token {tok.decode([t])!r} masked in state {fsm.state.name}"
        fsm.update(t)
    return allowed


def _greedy(fsm, tok, bias: dict[int, float], steps: int) -> str:
    out = []
    for _ in range(steps):
        logits = np.zeros(len(tok), dtype=np.float32)
        for k, v in bias.items():
            logits[k] = v
        t = int(np.argmax(fsm.process([], logits)))
        fsm.update(t)
        out.append(t)
    return tok.decode(out)


# ----------------------------------------------------------------------------- synthetic LM


def test_synthetic_lm_layout(lm_dir, tok):
    cfg = json.loads((lm_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert cfg["vocab_size"] == len(tok), "upstream adds vocab-sized masks: config vocab must equal len(tokenizer)"
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]
    codes = [tok.decode([i]) for i in range(len(tok)) if tok.decode([i]).startswith("<|audio_code_")]
    assert "<|audio_code_0|>" in codes and "<|audio_code_64000|>" in codes and "<|audio_code_65534|>" in codes
    assert tok.decode([tok.eos_token_id]) == "<|im_end|>" and tok.decode([tok.pad_token_id]) == "<|endoftext|>"
    assert tok.encode_prompt("a") == tok.encode("a"), "a Qwen3 LM tokenizer appends nothing"


def test_chat_template_equals_host_rendering(lm_dir):
    pytest.importorskip("transformers")
    from acestep_parity.torch_ref.lm import HFTokenizer

    hf = HFTokenizer(lm_dir)
    for query, inst in (("a happy song", False), ("", True), ("アニメ、ロック", False)):
        assert hf.chat_prompt(query, inst) == lm_prompt.inspiration_prompt(query, inst)
    prompt = lm_prompt.inspiration_prompt("x", False)
    assert prompt.startswith("<|im_start|>system\n# Instruction\nExpand the user's input into a more detailed")
    assert prompt.endswith("x\n\ninstrumental: false<|im_end|>\n<|im_start|>assistant\n")
    assert "NO USER INPUT" in lm_prompt.inspiration_prompt("   ", False)


def test_fast_and_hf_tokenizers_agree(lm_dir, tok):
    pytest.importorskip("transformers")
    from acestep_parity.torch_ref.lm import HFTokenizer

    hf = HFTokenizer(lm_dir)
    assert len(hf) == len(tok)
    assert [hf.decode([i]) for i in range(len(hf))] == [tok.decode([i]) for i in range(len(tok))]
    for text in ("bpm: 120", "keyscale: B♭ minor", "language: yue", " fr\n", lm_prompt.inspiration_prompt("q", 1)):
        assert hf.encode(text) == tok.encode(text) and hf.encode_prompt(text) == tok.encode_prompt(text)


def _copy_lm(checkpoint_dir, tmp_path):
    target = tmp_path / "ckpt"
    (target / LM_DIR).parent.mkdir(parents=True)
    shutil.copytree(checkpoint_dir / LM_DIR, target / LM_DIR)
    return target


@pytest.mark.parametrize("edit, expect", [
    ("rename", "model.norm.weightt"), ("shape", "(3, 3)"), ("drop", "lm_head.weight")])
def test_lm_loader_is_strict(checkpoint_dir, tmp_path, edit, expect):
    pytest.importorskip("torch")
    from safetensors.numpy import load_file, save_file

    from acestep_parity.checkpoint import CheckpointError, load_lm

    root = _copy_lm(checkpoint_dir, tmp_path)
    path = root / LM_DIR / "model.safetensors"
    tensors = load_file(str(path))
    if edit == "rename":
        tensors["model.norm.weightt"] = tensors.pop("model.norm.weight")
    elif edit == "shape":
        tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((3, 3), dtype=np.float32)
    else:
        del tensors["lm_head.weight"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as err:
        load_lm(root)
    assert expect in str(err.value) and str(path) in str(err.value)


def test_lm_loader_names_missing_folder(tmp_path):
    from acestep_parity.checkpoint import CheckpointError, check_lm_layout

    with pytest.raises(CheckpointError, match="acestep-5Hz-lm-0.6B"):
        check_lm_layout(tmp_path)


# ----------------------------------------------------------------------------- FSM tables


def test_value_trees_follow_tokenization(tok, tables):
    space = tok.encode(" ")[-1]
    assert tables.bpm_tree[()] == {space}  # "bpm: 120" -> ':' ' ' '1' '2' '0': the space is its own token
    firsts = {tok.decode([t]) for t in tables.bpm_tree[(space,)]}
    assert firsts == {"1", "2", "3", "4", "5", "6", "7", "8", "9"}
    three = tok.encode("3")[0]
    zero = tok.encode("0")[0]
    assert tables.newline_token in tables.bpm_tree[(space, three, zero)]  # 30 may end ...
    assert zero in tables.bpm_tree[(space, three, zero)]  # ... or become 300
    assert max(int(tok.decode(list(k[1:]))) for k in tables.duration_tree if len(k) > 1
               and tables.newline_token in tables.duration_tree[k]) == 30  # max_duration pins the tree
    firsts = {tok.decode([t]) for t in tables.keyscale_tree[()]}
    assert {" A", " B", " C", " D", " E", " F", " G"} <= firsts and {f.strip()[0] for f in firsts} <= set("ABCDEFG")
    assert " Eb" in firsts  # "keyscale: Eb major" tokenizes ':' ' Eb' ' major': its own first token
    assert {tok.decode([t]) for t in tables.timesig_tree[(space,)]} == {"2", "3", "4", "6"}
    assert tok.encode(" en")[0] in tables.language_tree[()]


def test_fixed_strings_use_longest_single_token_prefix(tok, tables):
    assert tables.fixed_string_tokens("keyscale:") == tok.encode("keyscale")
    assert tables.fixed_string_tokens(":") == tok.encode(":")
    assert tok.decode(tables.fixed_string_tokens("</think>")) == "</think>"


def test_genres_list_is_input(tok):
    assert load_genres("# comment\n\n Pop \nSynth Pop\n") == ["pop", "synth pop"]
    with pytest.raises(ValueError, match="genres"):
        FsmTables(tok, [], 30)


# ----------------------------------------------------------------------------- FSM rules


def test_field_order_and_forced_names(tok, tables):
    fsm = LmFsm(tables)
    steps = _feed(fsm, tok, "<think>\nbpm: 120\ncaption:")
    assert all(len(a) == 1 for a in steps[:3])  # <think>, \n, "bpm" forced
    assert fsm.state == S.CAPTION_VALUE
    _feed(fsm, tok, " A song.\n")
    logits = np.zeros(len(tok), dtype=np.float32)
    logits[tok.encode("duration")[0]] = 5.0
    out = fsm.process([], logits)
    assert np.isfinite(out).all(), "caption ending: a non-indented top token frees every token (EOS, codes)"
    _feed(fsm, tok, "duration:")
    assert fsm.state == S.DURATION_VALUE, "a recognised field name jumps to its value"
    _feed(fsm, tok, " 25\n")
    assert fsm.state == S.GENRES_NAME, "simple mode generates genres (skip_genres=False)"


def test_caption_ending_unknown_field_forces_duration(tok, tables):
    fsm = LmFsm(tables)
    _feed(fsm, tok, "<think>\nbpm: 90\ncaption: x.\n")
    junk = tok.encode("mood")[0]
    logits = np.zeros(len(tok), dtype=np.float32)
    logits[junk] = 5.0
    fsm.update(int(np.argmax(fsm.process([], logits))))
    fsm.update(tok.encode(":")[0])
    assert fsm.state == S.DURATION_NAME  # upstream writes "mood:duration: N", the parser then drops duration
    text = _greedy(fsm, tok, {}, 2)
    assert text == "duration:"


@pytest.mark.parametrize("next_line", ["audio_code", " more"])
def test_caption_lookahead_reads_the_raw_top_token(tok, tables, next_line):
    """After a newline in the caption, the raw top token (before the audio-code mask) decides: an in-range audio
    code (text "<...") ends the caption and the step is left unmasked; a leading space continues it, codes masked."""
    fsm = LmFsm(tables)
    _feed(fsm, tok, "<think>\nbpm: 90\ncaption: a calm song.\n")
    code, more = int(tables.audio_code_ids[5]), tok.encode(" more")[0]
    logits = np.zeros(len(tok), dtype=np.float32)
    logits[code], logits[more] = (50.0, 10.0) if next_line == "audio_code" else (10.0, 50.0)
    out = fsm.process([], logits.copy())
    if next_line == "audio_code":
        assert fsm.caption_ending and np.array_equal(out, logits)
    else:
        assert not fsm.caption_ending and not np.isfinite(out[tables.audio_code_ids]).any()


def test_audio_codes_blocked_in_caption_and_lyrics(tok, tables):
    fsm = LmFsm(tables)
    _feed(fsm, tok, "<think>\nbpm: 90\ncaption:")
    out = fsm.process([], np.zeros(len(tok), dtype=np.float32))
    assert not np.isfinite(out[tables.audio_code_ids]).any()
    assert np.isfinite(out[tok.encode("<|audio_code_64000|>")[0]]), "codes >= 64000 are plain text upstream"
    assert np.isfinite(out[tok.eos_token_id]), "EOS is not blocked inside the caption"


def test_language_is_top1_among_first_tokens_and_injection_is_verbatim(tok, tables):
    fsm = LmFsm(tables, user_metadata={"language": "xx"})
    _feed(fsm, tok, "<think>\nbpm: 90\ncaption: x.\n")
    fsm.caption_ending = False
    fsm.state, fsm.caption_after_newline = S.KEYSCALE_NAME, False
    _feed(fsm, tok, "keyscale: C major\nlanguage: xx\n")  # "xx" is not a valid language: injected anyway
    assert fsm.state == S.TIMESIG_NAME
    free = LmFsm(tables)
    free.state = S.LANGUAGE_VALUE
    logits = np.zeros(len(tok), dtype=np.float32)
    ja = tok.encode(" ja")[0]
    logits[ja] = 1.0
    logits[tok.encode("Warm")[0]] = 9.0  # not a language first token: ignored by the top-1 rule
    out = free.process([], logits)
    assert np.flatnonzero(np.isfinite(out)).tolist() == [ja]


def test_genres_rules(tok, tables):
    fsm = LmFsm(tables)
    fsm.state = S.GENRES_VALUE
    allowed = set(np.flatnonzero(np.isfinite(fsm.process([], np.zeros(len(tok), np.float32)))).tolist())
    assert tok.encode("Pop")[0] in allowed or tok.encode("P")[0] in allowed, "upper-case passes (lower-cased match)"
    assert tok.encode(" pop")[0] not in allowed, "a space-prefixed first token does not match the trie"
    fsm.update(tok.encode("zz")[0])  # an invalid prefix
    out = fsm.process([], np.zeros(len(tok), np.float32))
    assert np.flatnonzero(np.isfinite(out)).tolist() == [tables.newline_token]


def test_completed_masks_only_valid_audio_codes(tok, tables):
    fsm = LmFsm(tables)
    fsm.state = S.THINK_END_TAG
    _feed(fsm, tok, "</think>")
    assert fsm.state == S.COMPLETED
    out = fsm.process([], np.zeros(len(tok), np.float32))
    assert np.isinf(out[tables.audio_code_ids]).all() and np.isfinite(out).sum() == len(tok) - tables.audio_code_ids.size


# ----------------------------------------------------------------------------- budget, parsing, sampler


def test_max_new_tokens():
    assert lm_prompt.max_new_tokens() == 3500
    assert lm_prompt.max_new_tokens(config_max_new_tokens=100) == 100
    assert lm_prompt.max_new_tokens(target_duration=30) == 650
    assert lm_prompt.max_new_tokens(target_duration=5000, max_model_len=2048) == 1984


def test_parse_rules():
    text = ("<think>\nbpm: 120\ncaption: A song\n  over two lines.\nduration: x\ngenres:Pop\nkeyscale: C major\n"
            "language: en\ntimesignature: 4\n</think>\n\n# Lyric\n[verse]\nla<|im_end|>")
    meta = lm_parse.create_sample_fields(text, False)
    assert meta == {"bpm": 120, "caption": "A song over two lines.", "duration": "x", "genres": "Pop",
                    "keyscale": "C major", "language": "en", "timesignature": "4", "lyrics": "[verse]\nla",
                    "instrumental": False}
    assert lm_parse.extract_lyrics("</think>\n# Lyrics\nla") == "# Lyrics\nla", "upstream's regex keeps '# Lyrics'"
    assert lm_parse.extract_lyrics("</think>\nla<|endoftext|>") == "la<|endoftext|>"
    assert lm_parse.create_sample_fields("<think>\nbpm: 80\n", True) == {"bpm": 80, "lyrics": "[Instrumental]",
                                                                         "instrumental": True}
    sample = lm_parse.create_sample_result(meta)
    assert sample["duration"] is None and sample["bpm"] == 120 and sample["timesignature"] == "4"
    assert lm_parse.parse_lm_output("mood:duration: 34\n") == {}  # the quirk's line is not a duration field


def test_parse_reasoning_block_fallbacks_and_line_rules():
    # the reasoning block spans lines (re.DOTALL); what follows </think> is not metadata
    assert lm_parse.parse_lm_output("<think>\nbpm: 120\n</think>\n\nlanguage: fr") == {"bpm": 120}
    # no block: the text before the first audio code is the reasoning
    assert lm_parse.parse_lm_output("bpm: 90\n<|audio_code_1|>\nkeyscale: C major") == {"bpm": 90}
    # a line starting with '<' is skipped, even with a colon: the caption goes on past it
    assert lm_parse.parse_lm_output("caption: one\n<x>: y\n  two") == {"caption": "one two"}
    # a new field starts at a line whose first character is not blank; its name ends at the first colon
    assert lm_parse.parse_lm_output("caption: one\nx y: z\n  two") == {"caption": "one"}
    assert lm_parse.parse_lm_output("caption: a: b\n\tc") == {"caption": "a: b c"}  # tab continues too
    assert lm_parse.parse_lm_output("caption: one\n:\n  two") == {"caption": "one"}
    assert lm_parse.extract_lyrics("</think>\n# lyric\nla") == "la"  # the header in any case


def test_create_sample_result_defaults_and_na():
    assert lm_parse.create_sample_result({}) == {
        "caption": "", "lyrics": "", "bpm": None, "duration": None, "keyscale": "", "language": "",
        "timesignature": "", "instrumental": False}
    got = lm_parse.create_sample_result({"keyscale": "N/A", "vocal_language": "fr", "timesignature": "3"})
    assert (got["keyscale"], got["language"], got["timesignature"]) == ("", "fr", "3")


def test_chat_rendering_and_token_budget():
    turns = [{"role": "user", "content": "hi"}]
    assert lm_prompt.render_qwen3_chat(turns, add_generation_prompt=False) == "<|im_start|>user\nhi<|im_end|>\n"
    assert lm_prompt.max_new_tokens(target_duration=30) == 30 * 5 + 500
    assert lm_prompt.max_new_tokens(target_duration=30, generation_phase="codes") == 30 * 5 + 10
    assert lm_prompt.max_new_tokens(target_duration=0) == 3500  # no target: the default budget
    low = lm_prompt.max_new_tokens(target_duration=0.5)  # a target below the minimum is raised to it
    assert low == lm_prompt.DURATION_MIN * 5 + 500


def test_sampling_chain():
    scores = np.array([1.0, 3.0, 2.0, -np.inf], dtype=np.float32)
    assert lm_planner.top_k_filter(scores, 2).tolist() == [-np.inf, 3.0, 2.0, -np.inf]
    kept = lm_planner.top_p_filter(scores, 0.5)
    assert np.isfinite(kept).tolist() == [False, True, False, False]
    pen = lm_planner.repetition_penalty([0, 0, 1], np.array([-1.0, 2.0, 3.0], np.float32), 2.0)
    assert pen.tolist() == [-2.0, 1.0, 3.0]
    draws = [lm_planner.seeded_sample(scores, 1.0, np.random.Generator(np.random.PCG64(7))) for _ in range(3)]
    assert len(set(draws)) == 1 and draws[0] != 3
    rng = np.random.Generator(np.random.PCG64(0))
    counts = np.bincount([lm_planner.seeded_sample(scores, 1.0, rng) for _ in range(4000)], minlength=4)
    probs = np.exp([1.0, 3.0, 2.0]) / np.exp([1.0, 3.0, 2.0]).sum()
    deviation = np.abs(counts[:3] / 4000 - probs).max()
    assert counts[3] == 0 and deviation < 4 * np.sqrt(0.25 / 4000)  # within 4 sigma of the softmax
    assert lm_planner.margin(np.array([1.0, 3.0, -np.inf], np.float32)) == 2.0
    assert lm_planner.margin(np.array([1.0, -np.inf], np.float32)) == float("inf")


def test_user_metadata_rule():
    assert lm_planner.user_metadata(None) == {} and lm_planner.user_metadata(" unknown ") == {}
    assert lm_planner.user_metadata(" fr ") == {"language": "fr"}


# ----------------------------------------------------------------------------- torch-free planner

_BLOCKED_PLAN = TORCH_BLOCKER + """
import json
from pathlib import Path
from acestep_ort.host.case import load_case
from acestep_ort.lm import OrtLm
result = OrtLm(Path(sys.argv[1])).plan(load_case(Path(sys.argv[2])))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"tokens": result.tokens.tolist(), "metadata": result.metadata, "heavy": heavy}))
"""


def test_py_ort_planner_is_torch_free(parity_session):
    """The ORT planner (graphs + FastTokenizer + host FSM) runs with torch & co. blocked, same tokens as in-process."""
    import subprocess
    import sys

    from acestep_parity import paths
    backend = backend_or_skip(parity_session, "py_ort")
    case_path = paths.CASES_DIR / "simple_mode_05.json"
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_PLAN, str(backend.onnx_dir), str(case_path)],
                          capture_output=True, text=True, timeout=600, cwd=str(paths.REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    from acestep_ort.host.case import load_case

    in_process = backend.engine.lm.plan(load_case(case_path))
    assert out["tokens"] == in_process.tokens.tolist() and out["metadata"] == in_process.metadata
    assert out["metadata"]["language"] == "fr", "simple_mode_05 injects vocal_language 'fr'"


# ----------------------------------------------------------------------------- bad input


def test_user_values_are_injected_unvalidated(tok, tables):
    """Upstream injects user metadata verbatim (" {value}\\n"), even out of range: bpm 500, duration 9999."""
    fsm = LmFsm(tables, user_metadata={"bpm": "500", "duration": "9999", "language": "xx"})
    _feed(fsm, tok, "<think>\nbpm: 500\ncaption:")
    assert fsm.state == S.CAPTION_VALUE
    fsm.state = S.DURATION_NAME
    _feed(fsm, tok, "duration: 9999\n")
    assert fsm.state == S.GENRES_NAME
    assert lm_parse.parse_lm_output("<think>\nbpm: 500\nduration: 9999\n</think>") == {"bpm": 500, "duration": 9999}


def test_max_duration_below_minimum_is_refused(tok):
    genres = ["pop"]
    with pytest.raises(ValueError, match="max_duration 5"):
        FsmTables(tok, genres, 5)
    with pytest.raises(ValueError, match="max_duration 601"):
        FsmTables(tok, genres, 601)
    FsmTables(tok, genres, 10)


def test_case_schema_rejects_out_of_range_values(tmp_path):
    from acestep_ort.host.case import CaseError, load_case

    base = {"id": "simple_mode_x", "task": "simple_mode", "query": "q", "seeds": [1], "duration": 12.0}
    for field, value in (("duration", 900.0), ("bpm", 500)):
        path = tmp_path / "simple_mode_x.json"
        path.write_text(json.dumps({**base, field: value}))
        with pytest.raises(CaseError, match=field):
            load_case(path)


def test_simple_mode_case_without_duration_gets_the_cpu_tier(tmp_path):
    from acestep_ort.host.case import load_case

    path = tmp_path / "simple_mode_y.json"
    path.write_text(json.dumps({"id": "simple_mode_y", "task": "simple_mode", "query": "q", "seeds": [1]}))
    case = load_case(path)
    assert lm_planner.case_request(case).max_duration == lm_planner.CPU_MAX_DURATION == 240
    assert lm_planner.text2music_fields({"caption": "c"}, "unknown", case.duration)["duration"] is None
