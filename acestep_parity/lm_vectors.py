"""Shared test vectors of the planner host logic (``lm_fsm.json``): the Python FSM
(:mod:`acestep_ort.host.lm_fsm`) and the Rust one (``rust/acestep-core/src/lm_fsm.rs``) on the same inputs.

Written by :mod:`acestep_parity.rust_vectors`; read by ``rust/acestep-core/tests/lm_vectors.rs``, which asserts
equality exactly. Kept small (the tiny synthetic LM's vocabulary has ~1,100 ids):

* ``vocab``: ``decode([id])`` of every id, eos/pad, and every ``encode(text)`` the FSM asks for (recorded while
  Python builds its tables and runs; the Rust test's tokenizer answers from this table and fails on any other
  text, so the two FSMs must also *ask* the same questions);
* ``runs``: per run the FSM inputs (genres list, ``max_duration``, user metadata, options) and per step a sparse
  logits row (``ids``/``bits``; every other id holds :data:`FILL`), the token fed to ``update``, the allowed
  set (ids when at most :data:`SMALL_SET` are allowed, always count + ``mask_digest``) and the masked values at
  the stored ids. ``simple_mode_*`` runs are teacher-forced on the golden's token stream with the golden's
  top-8 raw logits (plus the chosen token where it is not among them, given the top value + 1); ``random_*``
  runs are free-running (greedy) on seeded sparse random rows, with user values injected in every field, the
  ``cot`` phase and a target duration, so states simple mode never reaches are covered too;
* ``parse``: output texts (the golden's and hand-written quirk cases) and ``json.dumps`` of
  ``create_sample_from_query``'s dict, plus ``create_sample``'s fields; ``prompts``: the chat prompt per case.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from acestep_ort.host import lm_parse, lm_planner, lm_prompt
from acestep_ort.host.case import discover_cases
from acestep_ort.host.lm_fsm import FIXED_STRINGS, FsmTables, LmFsm, S, load_genres
from acestep_ort.host.lm_tokenizer import GENRES_FILE, LM_DIR, FastTokenizer
from acestep_parity import paths

FILL = np.float32(-1.0e4)
SMALL_SET = 64
RANDOM_STEPS = 160
RANDOM_K = 10


class RecordingTokenizer:
    """:class:`acestep_ort.host.lm_tokenizer.LmTokenizer` that records every ``encode`` call."""

    def __init__(self, tok: FastTokenizer):
        self.tok = tok
        self.eos_token_id = tok.eos_token_id
        self.pad_token_id = tok.pad_token_id
        self.encoded: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text)
        self.encoded[text] = list(ids)
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        return self.tok.encode_prompt(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def _bits(values) -> str:
    """float32 bit patterns, space-separated (one JSON string per list keeps the file small)."""
    return " ".join(f"{v:08x}" for v in np.asarray(values, dtype=np.float32).reshape(-1).view(np.uint32).tolist())


def _ids(ids) -> str:
    return " ".join(str(int(i)) for i in ids)


def _row(vocab: int, ids: list[int], values: np.ndarray) -> np.ndarray:
    row = np.full(vocab, FILL, dtype=np.float32)
    row[np.asarray(ids, dtype=np.int64)] = values
    return row


def _step_record(fsm: LmFsm, ids: list[int], values: np.ndarray, vocab: int, history: list[int],
                 token: int | None) -> tuple[dict, int]:
    """Run one FSM step on a sparse row; feed ``token`` (teacher forcing) or the greedy choice."""
    row = _row(vocab, ids, values)
    masked = fsm.process(history, row)
    allowed = np.isfinite(masked)
    chosen = int(np.argmax(masked)) if token is None else int(token)
    fsm.update(chosen)
    n = int(allowed.sum())
    rec = {"ids": _ids(ids), "bits": _bits(values), "token": chosen, "allowed_count": n,
           "digest": str(lm_planner.mask_digests(allowed[None])[0]),
           "allowed": _ids(np.flatnonzero(allowed)) if n <= SMALL_SET else None,
           "masked_bits": _bits(masked[np.asarray(ids, dtype=np.int64)])}
    return rec, chosen


def _golden_arrays(checkpoint: Path, case_id: str) -> dict[str, np.ndarray] | None:
    from acestep_parity.checkpoint import checkpoint_id

    path = paths.GOLDEN_DIR / checkpoint_id(checkpoint) / f"{case_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k.startswith("lm_")}


def _record_user_values(tok: RecordingTokenizer, user: dict[str, str]) -> None:
    """The Rust FSM encodes ``" {value}\\n"`` of every user value up front (Python when the field is reached)."""
    for value in user.values():
        tok.encode(f" {value}\n")


def _case_run(tok: RecordingTokenizer, genres: list[str], checkpoint: Path, case) -> dict | None:
    golden = _golden_arrays(checkpoint, case.id)
    if golden is None:
        return None
    req = lm_planner.case_request(case)
    tables = FsmTables(tok, genres, req.max_duration)
    user = lm_planner.user_metadata(req.vocal_language)
    _record_user_values(tok, user)
    fsm = LmFsm(tables, user_metadata=user)
    vocab = len(tok)
    history = [int(i) for i in golden["lm_prompt_ids"]]
    steps = []
    for step, token in enumerate(golden["lm_tokens"]):
        ids = [int(i) for i in golden["lm_topk_ids"][step]]
        values = golden["lm_topk_logits"][step].astype(np.float32)
        if int(token) not in ids:
            ids.append(int(token))
            values = np.append(values, np.float32(values.max() + 1.0))
        rec, _ = _step_record(fsm, ids, values, vocab, history, int(token))
        history.append(int(token))
        steps.append(rec)
    return {"name": case.id, "max_duration": req.max_duration, "user_metadata": user, "options": {},
            "teacher_forced": True, "golden_digests": [str(d) for d in golden["lm_mask_digests"]], "steps": steps}


RANDOM_RUNS = (
    {"name": "random_plain", "seed": 1, "max_duration": 600, "user_metadata": {}, "options": {}},
    {"name": "random_all_user_values", "seed": 2, "max_duration": 120,
     "user_metadata": {"bpm": "500", "caption": "given caption", "duration": "9999", "genres": "Rock",
                       "keyscale": "C major", "language": "xx", "timesignature": "4"}, "options": {}},
    {"name": "random_genres_user", "seed": 3, "max_duration": 30, "user_metadata": {"genres": "city pop"},
     "options": {}},
    {"name": "random_cot_target", "seed": 4, "max_duration": 600, "user_metadata": {},
     "options": {"generation_phase": "cot", "skip_genres": True, "target_duration": 30.0}},
    {"name": "random_stop_at_reasoning", "seed": 5, "max_duration": 240, "user_metadata": {"language": "ja"},
     "options": {"skip_caption": True, "skip_language": True, "stop_at_reasoning": True}},
)

# A grid of free-running runs over the FSM's options, each with its own seed: max_duration 10 (the duration tree
# at its low end; 600 added no branch), user values in some fields and not others, both phases the Rust port has (not "codes") and every
# skip / target / stop option. It reaches branches the named runs above leave out (measured by `make coverage`:
# rust_fsm_vectors.txt, fsm_vectors.txt).
RANDOM_GRID = tuple(
    {"name": f"random_grid_{i:02d}", "seed": 100 + i, "max_duration": max_duration, "user_metadata": user,
     "options": options}
    for i, (max_duration, user, options) in enumerate(itertools.product(
        (10,),
        ({}, {"bpm": "120", "keyscale": "F# minor"}, {"duration": "30", "timesignature": "3", "language": "en"}),
        ({}, {"generation_phase": "cot"}, {"generation_phase": "cot", "skip_genres": True, "skip_caption": True},
         {"skip_language": True, "target_duration": 12.0}, {"stop_at_reasoning": True}),
    )))


def _random_run(tok: RecordingTokenizer, genres: list[str], spec: dict) -> dict:
    tables = FsmTables(tok, genres, spec["max_duration"])
    _record_user_values(tok, spec["user_metadata"])
    fsm = LmFsm(tables, user_metadata=dict(spec["user_metadata"]), **spec["options"])
    vocab = len(tok)
    rng = np.random.Generator(np.random.PCG64(spec["seed"]))
    steps, history = [], []
    for _ in range(RANDOM_STEPS):
        ids = [int(i) for i in rng.choice(vocab, size=RANDOM_K, replace=False)]
        values = (rng.standard_normal(RANDOM_K) * 4).astype(np.float32)
        if fsm.state == S.LANGUAGE_VALUE and not fsm.accumulated_token_ids:
            # the FSM takes the top-1 among the languages' first tokens; left at FILL they would tie exactly, and a
            # tie resolves by Python's set order upstream and by the lowest id in Rust (docs/lm_planner.md): each
            # gets a value of its own, as model logits do
            extra = sorted(set(tables.language_tree.get((), ())) - set(ids))
            ids += extra
            values = np.concatenate([values, (rng.standard_normal(len(extra)) * 4).astype(np.float32)])
        order = np.argsort(ids, kind="stable")
        ids, values = [ids[i] for i in order], values[order]
        rec, chosen = _step_record(fsm, ids, values, vocab, history, None)
        history.append(chosen)
        steps.append(rec)
        if chosen in (tok.eos_token_id, tok.pad_token_id):
            break
    return {"name": spec["name"], "max_duration": spec["max_duration"], "user_metadata": spec["user_metadata"],
            "options": spec["options"], "teacher_forced": False, "steps": steps}


# Runs steered to FSM branches that random logits do not reach: each script is forced text (the token at 100, the
# rest FILL), "top" steps (sparse logits given by token text, or "audio_code" for an in-range audio-code token) and
# "expect" checks that the generator really reached the branch (checked here, not recorded).
DIRECTED_RUNS = (
    # The caption's lookahead after a newline reads the raw top token, before the audio-code mask: an in-range
    # audio code starting the next line ends the caption (its text starts with "<", not a space).
    {"name": "directed_caption_ends_on_audio_code", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption: a calm song.\n"),
                ("top", {"audio_code": 50.0, " more": 10.0}), ("expect", "caption_ending"),
                ("fill", 6)]},
    # The same line starting with a space continues the caption (and codes stay masked).
    {"name": "directed_caption_continues_after_space", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption: a calm song.\n"),
                ("top", {" more": 50.0, "audio_code": 10.0}), ("expect", "caption_continues"), ("fill", 4)]},
    # No language injected: the language value is the top-1 among the first tokens of every language, even
    # when the top token overall is not one of them.
    {"name": "directed_language_top1_among_first_tokens", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "language:"),
                ("expect", "language_value"), ("top", {"Warm": 9.0, " ja": 1.0}), ("expect", "language_chosen"),
                ("fill", 6)]},
    # (Not here: every language first token tied at FILL. Upstream takes the first maximum in the iteration order
    # of a Python set, which py_ort reproduces and Rust does not: it takes the lowest id. Model logits do not tie
    # exactly; docs/lm_planner.md says so.)
)


def _directed_run(tok: RecordingTokenizer, genres: list[str], spec: dict) -> dict:
    tables = FsmTables(tok, genres, spec["max_duration"])
    _record_user_values(tok, spec["user_metadata"])
    fsm = LmFsm(tables, user_metadata=dict(spec["user_metadata"]), **spec["options"])
    vocab = len(tok)
    steps: list[dict] = []
    history: list[int] = []

    def step(ids: list[int], values: list[float]) -> int:
        order = np.argsort(ids, kind="stable")
        rec, chosen = _step_record(fsm, [ids[i] for i in order], np.asarray(values, np.float32)[order], vocab,
                                   history, None)
        history.append(chosen)
        steps.append(rec)
        return chosen

    for kind, arg in spec["script"]:
        if kind == "text":
            for token in tok.encode(arg):
                step([token], [100.0])
        elif kind == "top":
            ids = [int(tables.audio_code_ids[5]) if text == "audio_code" else tok.encode(text)[0] for text in arg]
            step(ids, list(arg.values()))
        elif kind == "fill":
            for _ in range(arg):
                step([0], [float(FILL)])
        else:
            reached = {"caption_ending": fsm.caption_ending and fsm.state == S.CAPTION_VALUE,
                       "caption_continues": not fsm.caption_ending and fsm.state == S.CAPTION_VALUE,
                       "language_value": fsm.state == S.LANGUAGE_VALUE and not fsm.accumulated_token_ids,
                       "language_chosen": fsm.state == S.LANGUAGE_VALUE and
                       history[-1:] == [tok.encode(" ja")[0]]}[arg]
            if not reached:
                raise AssertionError(f"{spec['name']}: the script did not reach {arg} (state {fsm.state.name})")
    return {"name": spec["name"], "max_duration": spec["max_duration"], "user_metadata": spec["user_metadata"],
            "options": spec["options"], "teacher_forced": False, "steps": steps}


PARSE_TEXTS = (
    ("<think>\nbpm: 120\ncaption: a\n  b\n\nduration: 30\ngenres: pop\n</think>\n\n# Lyric\n[verse]\nla<|im_end|>", False),
    ("<think>\nbpm: fast\nduration: 007\nmood:duration: 34\nkeyscale: C major\n</think>\n\n# Lyrics\nhey", False),
    ("<think></think>bpm: 1_000\n<|audio_code_3|>", True),
    ("no think at all\nlanguage: en", True),
    ("<think>\ncaption: café ☕\ttab\nlanguage:  fr \ntimesignature: \n</think>\n\n", True),
    ("<think>\nBPM: -5\nDuration: 12.5\n</think>lyrics<|endoftext|>", False),
    ("", True),
)


def parse_vectors(texts) -> list[dict]:
    out = []
    for text, instrumental in texts:
        meta = lm_parse.create_sample_fields(text, instrumental)
        sample = lm_parse.create_sample_result(meta)
        out.append({"text": text, "instrumental": instrumental,
                    "metadata": json.dumps(meta, ensure_ascii=False, sort_keys=True),
                    "lyrics": lm_parse.extract_lyrics(text), "sample": sample,
                    "fields": lm_planner.text2music_fields(sample, "unknown", 12.0)})
    return out


class _Dur:
    def __init__(self, duration):
        self.duration = duration


def lm_fsm_vectors(checkpoint: Path | None = None) -> dict | None:
    """The ``lm_fsm.json`` content, or None where the checkpoint has no LM."""
    checkpoint = Path(checkpoint) if checkpoint else paths.ensure_synthetic_checkpoint("tiny")
    lm_dir = checkpoint / LM_DIR
    if not (lm_dir / "tokenizer.json").is_file():
        return None
    tok = RecordingTokenizer(FastTokenizer(lm_dir))
    genres_text = (lm_dir / GENRES_FILE).read_text(encoding="utf-8")
    genres = load_genres(genres_text)
    cases = [c for c in discover_cases(paths.CASES_DIR) if c.task == "simple_mode"]
    runs = [r for r in (_case_run(tok, genres, checkpoint, c) for c in cases) if r is not None]
    runs += [_random_run(tok, genres, spec) for spec in RANDOM_RUNS + RANDOM_GRID]
    runs += [_directed_run(tok, genres, spec) for spec in DIRECTED_RUNS]
    # every suffix of every fixed string (the Rust tables precompute them; Python asks lazily)
    tables = FsmTables(tok, genres, 600)
    for fixed in FIXED_STRINGS.values():
        for start in range(len(fixed)):
            tables.fixed_string_tokens(fixed[start:])
    parse_texts = list(PARSE_TEXTS)
    prompts = []
    for case in cases:
        golden = _golden_arrays(checkpoint, case.id)
        if golden is not None:
            parse_texts.append((str(golden["lm_text"]), case.instrumental))
        prompts.append({"query": case.query, "instrumental": case.instrumental,
                        "vocal_language": lm_planner.case_vocal_language(case), "duration": case.duration,
                        "prompt": lm_prompt.inspiration_prompt(case.query, case.instrumental),
                        "max_duration": lm_planner.case_max_duration(case),
                        "user_metadata": lm_planner.user_metadata(lm_planner.case_vocal_language(case))})
    for query, language, duration in (("  ", " Unknown ", None), ("x", " de ", 0.0), ("", "", 600.0)):
        prompts.append({"query": query, "instrumental": True, "vocal_language": language, "duration": duration,
                        "prompt": lm_prompt.inspiration_prompt(query, True),
                        "max_duration": lm_planner.case_max_duration(_Dur(duration)),
                        "user_metadata": lm_planner.user_metadata(language)})
    return {
        "vocab": {"size": len(tok), "eos": tok.eos_token_id, "pad": tok.pad_token_id,
                  "decode": [tok.decode([i]) for i in range(len(tok))],
                  "encode": {k: _ids(v) for k, v in sorted(tok.encoded.items())}},
        "genres_text": genres_text, "genres": genres, "fill_bits": _bits([FILL]),
        "max_new_tokens": lm_prompt.max_new_tokens(), "runs": runs, "parse": parse_vectors(parse_texts),
        "prompts": prompts,
    }


if __name__ == "__main__":  # `make coverage`: what the shared vectors reach of lm_fsm.py (writes nothing)
    lm_fsm_vectors()
