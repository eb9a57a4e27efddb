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
  ``cot`` phase and a target duration, so states simple mode never reaches are covered too; ``directed_*`` and
  ``toy_*`` runs are scripted to the branches left (:data:`DIRECTED_RUNS`), the ``toy_*`` ones on hand-made
  vocabularies (``toy_vocabs``, :data:`TOY_VOCABS`); ``python_*`` runs are marked ``python_only`` (the codes phase,
  a vocabulary without eos: what the Rust port does not have) and skipped by the Rust test. With them every
  branch of ``lm_fsm.py`` is taken except two that cannot be (``make coverage``: ``fsm_vectors.txt``);
* ``refusals``: what both FSMs refuse to build (no genres, ``max_duration`` outside 10..600) with Python's message;
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

    def __init__(self, tok: FastTokenizer | ToyTokenizer):
        self.tok = tok
        self.tokens = getattr(tok, "tokens", [])
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


class ToyTokenizer:
    """A hand-made :class:`acestep_ort.host.lm_tokenizer.LmTokenizer` for the FSM branches a real BPE vocabulary
    never takes (newline id 0 or none at all, no backtick, no audio codes, a token that decodes to "", no ``0``,
    field names that cannot be encoded, values dropped from a prefix tree, the fixed-string fallback list):
    greedy longest match over ``tokens`` with characters outside them dropped, and ``overrides`` answered
    verbatim (by token text). Used only for vectors; both FSMs see it through the recorded ``encode`` table."""

    def __init__(self, tokens: list[str], eos: str | None, pad: str | None,
                 overrides: dict[str, list[str]] | None = None):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens) if t}
        self.eos_token_id = self.index[eos] if eos is not None else None
        self.pad_token_id = self.index[pad] if pad is not None else None
        self.overrides = {k: [self.index[t] for t in v] for k, v in (overrides or {}).items()}
        self.longest = max(len(t) for t in self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        if text in self.overrides:
            return list(self.overrides[text])
        ids, pos = [], 0
        while pos < len(text):
            for end in range(min(len(text), pos + self.longest), pos, -1):
                if text[pos:end] in self.index:
                    ids.append(self.index[text[pos:end]])
                    pos = end
                    break
            else:
                pos += 1  # not in the vocabulary: dropped
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)


_ZW = "\u200b"  # a token whose text is neither whitespace nor a prefix of anything the FSM forces
_KEYSCALE_PREFIXES = {"k": [], "ke": ["ke", _ZW], "key": ["ke", "y"], "keys": [_ZW, "k", "e", "y", "s"],
                      "keysc": list("keysc"), "keysca": list("keysca"), "keyscal": list("keyscal"),
                      "keyscale": list("keyscale"), "keyscale:": ["keyscale", ":"]}
TOY_VOCABS = {
    # newline at id 0 (upstream's `if self.newline_token:` reads it as missing, `== newline_token` does not), a
    # token with empty text, no backtick, no audio codes (three look-alikes), no digit 0 (but an Arabic-Indic 3,
    # a digit to str.isdigit), no language value left in the language tree,
    # keyscale values dropped each way, and no prefix of "keyscale:" that is a single token (the fallback list)
    "toy_newline_0": ToyTokenizer(
        ["\n", "", "<think>", "</think>", "<|im_end|>", "<|endoftext|>", "bpm", "caption", "duration", "genres",
         "keyscale", "language", "timesignature", ":", " ", *"123456789", "C", " major", " minor", "#", "ke", "y",
         "s", "k", "e", "c", "a", "l", _ZW, "p", "o", "x", " x", ".", "\u0663",
         # audio-code look-alikes that are not in-range codes (no digits, not only digits, out of range)
         "<|audio_code_|>", "<|audio_code_1a|>", "<|audio_code_64000|>"],
        eos="<|im_end|>", pad="<|endoftext|>",
        overrides={**_KEYSCALE_PREFIXES, "keyscale: D major": ["keyscale", ":", " major"],
                   "keyscale: E major": ["keyscale", ":"], "keyscale: F major": ["keyscale"],
                   "keyscale: G major": ["k", ":"], "language:": ["language", _ZW]}),
    # no newline token at all ("\n" encodes to nothing) and no field name encodable: every name state has no
    # allowed token and is passed at once (upstream's "fixed string exhausted" branch, scores zeroed); no
    # "</think>" either, so the CoT end is passed the same way
    "toy_no_newline": ToyTokenizer(["<|im_end|>", "<|endoftext|>", "<think>", *"12346", "C", " major", " en"],
                                   eos="<|im_end|>", pad="<|endoftext|>"),
    # as above with "</think>", for the stop-at-reasoning EOS on an exhausted fixed string
    "toy_no_newline_end_tag": ToyTokenizer(["<|im_end|>", "<|endoftext|>", "<think>", "</think>", *"12346"],
                                           eos="<|im_end|>", pad="<|endoftext|>"),
    # no eos at all: the Python FSM's `eos_token_id is None` guards (Rust's LmVocab always has one: python_only)
    "toy_no_eos": ToyTokenizer(["<|endoftext|>", "<think>", "</think>", "\n", *"12346"], eos=None,
                              pad="<|endoftext|>"),
}
_ALL_USER_VALUES = {"bpm": "1", "caption": "2", "duration": "3", "genres": "4", "keyscale": "6", "language": "1",
                    "timesignature": "2"}
TOY_GENRES = "po\npop\nx y\n"

# Runs steered to FSM branches that random logits do not reach: each script is forced text (the token at 100, the
# rest FILL), "top" steps (sparse logits given by token text, or "audio_code" for an in-range audio-code token),
# "fill" steps (every logit FILL: the greedy choice is id 0 or the only allowed one), "force" steps (the token fed
# to update whatever the mask allows, as a host may do through the C ABI; the step's record says "forced") and
# "expect" checks that the generator really reached the branch (checked here, not recorded). A run may name a
# toy vocabulary (TOY_VOCABS), its own genres list, a prompt (the history the codes phase scans) and
# "python_only" with the reason the Rust test skips it.
_COT = [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "duration: 30\n"), ("text", "genres:"),
        ("text", "pop"), ("text", "\n"), ("text", "keyscale:"), ("text", " C major"), ("text", "\n"),
        ("text", "language:"), ("text", " en"), ("text", "\n"), ("text", "timesignature: 4\n")]
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
    # The whole CoT in the cot phase with a target duration: the duration digits are forced from the target, then
    # the newline; after </think> only audio codes, EOS masked until target_codes (5 per second), then forced.
    {"name": "directed_cot_target_codes", "max_duration": 600, "user_metadata": {},
     "options": {"generation_phase": "cot", "target_duration": 1.0},
     "script": [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "duration:"), ("expect", "duration_value"),
                ("fill", 2), ("text", "genres:"), ("text", "pop"), ("text", "\n"), ("text", "keyscale: C major\n"),
                ("text", "language:"), ("text", " en"), ("text", "\n"), ("text", "timesignature: 4\n"),
                ("text", "</think>"), ("expect", "codes"), ("top", {"audio_code": 5.0, "<|im_end|>": 9.0}),
                ("top", {"audio_code": 5.0, "<|im_end|>": 9.0}), ("fill", 4), ("expect", "eos_forced"),
                ("fill", 2)]},
    # cot phase, stop at reasoning: EOS at </think>, then COMPLETED without the understand phase's code mask.
    {"name": "directed_cot_stop_at_reasoning", "max_duration": 600, "user_metadata": {},
     "options": {"generation_phase": "cot", "stop_at_reasoning": True},
     "script": [*_COT, ("fill", 1), ("expect", "completed"), ("top", {"audio_code": 5.0}), ("fill", 1)]},
    # The caption's 512-token cap forces the newline.
    {"name": "directed_caption_token_cap", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption:"), ("fill", 512), ("expect", "caption_capped"), ("fill", 2)]},
    # skip_genres, but the caption ending names "genres:": the FSM jumps to the genres value although the
    # transition table has no entry for it, so its newline transitions nowhere (upstream's table lookup misses).
    {"name": "directed_caption_ending_to_skipped_genres", "max_duration": 600, "user_metadata": {},
     "options": {"skip_genres": True},
     "script": [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "genres:"), ("expect", "genres_value"),
                ("text", "pop"), ("text", "\n"), ("expect", "genres_value"), ("fill", 3)]},
    # A complete genre that also continues ("lo-fi" / "lo-fi hip hop") allows the newline and the space; a tab
    # inside a genre makes whitespace tokens candidates where no space may follow (they are dropped); a genre
    # whose next character no token starts with leaves nothing, so the newline is forced.
    {"name": "directed_genres_tab_and_continuation", "max_duration": 600, "user_metadata": {}, "options": {},
     # (CRLF and CR line ends, no final newline: splitlines as Python's)
     "genres_text": "lo\tfi\r\nlo-fi\r\nlo-fi hip hop\rжa",
     "script": [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "genres:"), ("text", "lo"),
                ("expect", "genres_lo"), ("text", "-fi"), ("expect", "genres_lo-fi"), ("fill", 2)]},
    # Tokens fed off the mask (the C ABI's ace_lm_update takes any id): a bpm value outside the tree leaves no
    # allowed token (all -inf); a keyscale or language prefix outside the tree forces the newline; so does a
    # genres prefix outside the trie. (The language's first token is given a logit: forced at FILL, every
    # language's first token would tie, see above.)
    {"name": "directed_forced_off_mask_tokens", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption: x.\n"), ("text", "genres:"), ("force", "x"), ("fill", 1),
                ("text", "keyscale:"), ("force", " major"), ("fill", 1), ("text", "language:"),
                ("expect", "language_value"), ("top", {" ja": 5.0}), ("force", "x"), ("fill", 2)]},
    # NaN logits (a broken model): they survive the masks, and the greedy choice is the first NaN (numpy's
    # argmax), in the caption and among the languages' first tokens
    {"name": "directed_nan_logits", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm: 90\ncaption:"), ("top", {" x": 5.0, " more": float("nan")}),
                ("text", ".\n"), ("text", "language:"), ("expect", "language_value"),
                ("top", {" ja": 5.0, " en": float("nan")}), ("fill", 2)]},
    {"name": "directed_forced_bpm_off_tree", "max_duration": 600, "user_metadata": {}, "options": {},
     "script": [("text", "<think>\nbpm:"), ("force", "x"), ("fill", 2)]},
    # Toy vocabularies (TOY_VOCABS): the branches a real tokenizer never takes.
    {"name": "toy_newline_0_walk", "vocab": "toy_newline_0", "genres_text": TOY_GENRES, "max_duration": 10,
     "user_metadata": {}, "options": {"target_duration": 10.0},
     "script": [("text", "<think>"), ("fill", 1), ("text", "bpm:"), ("text", " 1"), ("fill", 1),
                ("text", "caption:"), ("text", " x"), ("text", "\n"), ("top", {"": 5.0}), ("text", "."),
                ("text", "\n"), ("top", {"duration": 5.0}), ("text", ":"), ("expect", "duration_value"),
                ("fill", 1), ("force", "\u0663"), ("fill", 1), ("text", "genres:"), ("expect", "genres_value"), ("force", "o"), ("fill", 1),
                ("text", "keyscale:"), ("fill", 4), ("text", "language:"), ("expect", "language_value"), ("fill", 1),
                ("text", "timesignature:"), ("fill", 3)]},
    {"name": "toy_newline_0_genres", "vocab": "toy_newline_0", "genres_text": TOY_GENRES, "max_duration": 10,
     "user_metadata": {"bpm": "1", "caption": "x"}, "options": {},
     "script": [("fill", 9), ("text", "duration:"), ("fill", 2), ("text", "genres:"), ("text", "x"), ("fill", 4)]},
    # a genre that is complete and continues ("po" / "pop") with newline id 0: the newline is not added
    {"name": "toy_newline_0_genre_complete", "vocab": "toy_newline_0", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": {"bpm": "1", "caption": "x", "duration": "1"}, "options": {},
     "script": [("fill", 16), ("text", "genres:"), ("text", "po"), ("expect", "genres_po"), ("fill", 3)]},
    # the caption's 512-token cap without any newline token: nothing is forced
    {"name": "toy_no_newline_caption_cap", "vocab": "toy_no_newline", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": {"bpm": "1"}, "options": {}, "script": [("fill", 516)]},
    {"name": "toy_no_newline_user_values", "vocab": "toy_no_newline", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": _ALL_USER_VALUES, "options": {}, "script": [("fill", 24)]},
    {"name": "toy_no_newline_cot", "vocab": "toy_no_newline", "genres_text": TOY_GENRES, "max_duration": 10,
     "user_metadata": _ALL_USER_VALUES, "options": {"generation_phase": "cot"}, "script": [("fill", 24)]},
    {"name": "toy_no_newline_unencodable_value", "vocab": "toy_no_newline", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": {"bpm": "zz"}, "options": {}, "script": [("fill", 4)]},
    {"name": "toy_no_newline_stop_at_reasoning", "vocab": "toy_no_newline_end_tag", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": _ALL_USER_VALUES, "options": {"stop_at_reasoning": True},
     "script": [("fill", 24)]},
    {"name": "toy_no_newline_stop_exhausted", "vocab": "toy_no_newline", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": _ALL_USER_VALUES, "options": {"stop_at_reasoning": True},
     "script": [("fill", 24)]},
    # Python only: the Rust FSM has no codes phase (documented scope) and its LmVocab always has an eos.
    {"name": "python_codes_phase_after_think", "max_duration": 600, "user_metadata": {},
     "options": {"generation_phase": "codes", "target_duration": 0.4}, "prompt": "<think>\nbpm: 90\n</think>\n",
     "python_only": "codes phase", "script": [("expect", "think_tag"), ("top", {"audio_code": 5.0}),
                                              ("expect", "codes"), ("fill", 3)]},
    {"name": "python_codes_phase_without_think", "max_duration": 600, "user_metadata": {},
     "options": {"generation_phase": "codes"}, "prompt": "<think>\nbpm: 90\n",
     "python_only": "codes phase", "script": [("fill", 3)]},
    {"name": "python_no_eos_stop_at_reasoning", "vocab": "toy_no_eos", "genres_text": TOY_GENRES,
     "max_duration": 10, "user_metadata": _ALL_USER_VALUES, "options": {"stop_at_reasoning": True},
     "python_only": "no eos", "script": [("fill", 24)]},
)


def _directed_run(tokenizers: dict[str, RecordingTokenizer], default_genres: str, spec: dict) -> dict:
    vocab_name = spec.get("vocab", "main")
    tok = tokenizers[vocab_name]
    genres = load_genres(spec.get("genres_text", default_genres))
    tables = FsmTables(tok, genres, spec["max_duration"])
    if vocab_name != "main":  # the Rust tables precompute every fixed-string suffix (Python asks lazily)
        for fixed in FIXED_STRINGS.values():
            for start in range(len(fixed)):
                tables.fixed_string_tokens(fixed[start:])
    _record_user_values(tok, spec["user_metadata"])
    fsm = LmFsm(tables, user_metadata=dict(spec["user_metadata"]), **spec["options"])
    vocab = len(tok)
    steps: list[dict] = []
    history: list[int] = tok.encode(spec["prompt"]) if "prompt" in spec else []

    def step(ids: list[int], values: list[float], token: int | None = None) -> int:
        order = np.argsort(ids, kind="stable")
        rec, chosen = _step_record(fsm, [ids[i] for i in order], np.asarray(values, np.float32)[order], vocab,
                                   history, token)
        if token is not None:
            rec["forced"] = True
        history.append(chosen)
        steps.append(rec)
        return chosen

    def token_of(text: str) -> int:
        return int(tables.audio_code_ids[5]) if text == "audio_code" else tok.encode(text)[0]

    for kind, arg in spec["script"]:
        if kind == "text":
            for token in tok.encode(arg):
                step([token], [100.0])
        elif kind == "top":
            ids = [token_of(text) if text else tok.tokens.index("") for text in arg]
            step(ids, list(arg.values()))
        elif kind == "fill":
            for _ in range(arg):
                step([0], [float(FILL)])
        elif kind == "force":
            token = token_of(arg)
            step([token], [100.0], token)
        else:
            eos = tok.eos_token_id
            reached = {"caption_ending": fsm.caption_ending and fsm.state == S.CAPTION_VALUE,
                       "caption_continues": not fsm.caption_ending and fsm.state == S.CAPTION_VALUE,
                       "caption_capped": fsm.state == S.CAPTION_VALUE and fsm.caption_token_count == 512,
                       "language_value": fsm.state == S.LANGUAGE_VALUE and not fsm.accumulated_token_ids,
                       "language_chosen": fsm.state == S.LANGUAGE_VALUE and
                       history[-1:] == [tok.encode(" ja")[0]],
                       "duration_value": fsm.state == S.DURATION_VALUE,
                       "genres_value": fsm.state == S.GENRES_VALUE,
                       "genres_lo": fsm.state == S.GENRES_VALUE and fsm.accumulated_value == "lo",
                       "genres_lo-fi": fsm.state == S.GENRES_VALUE and fsm.accumulated_value == "lo-fi",
                       "genres_po": fsm.state == S.GENRES_VALUE and fsm.accumulated_value == "po",
                       "think_tag": fsm.state == S.THINK_TAG,
                       "codes": fsm.state == S.CODES_GENERATION,
                       "eos_forced": fsm.state == S.CODES_GENERATION and history[-1:] == [eos],
                       "completed": fsm.state == S.COMPLETED}[arg]
            if not reached:
                raise AssertionError(f"{spec['name']}: the script did not reach {arg} (state {fsm.state.name})")
    out = {"name": spec["name"], "max_duration": spec["max_duration"], "user_metadata": spec["user_metadata"],
           "options": spec["options"], "teacher_forced": False, "steps": steps}
    for key in ("vocab", "genres_text", "python_only"):
        if key in spec:
            out[key] = spec[key]
    return out


# What both FSMs refuse to build: (name, genres text, max_duration); Python raises ValueError, Rust FsmError.
REFUSALS = (("no_genres", "# only a comment\n\n", 600), ("max_duration_below_10", TOY_GENRES, 9),
            ("max_duration_above_600", TOY_GENRES, 601))


def refusal_vectors(tok: RecordingTokenizer) -> list[dict]:
    out = []
    for name, genres_text, max_duration in REFUSALS:
        try:
            FsmTables(tok, load_genres(genres_text), max_duration)
        except ValueError as exc:
            out.append({"name": name, "genres_text": genres_text, "max_duration": max_duration,
                        "error": str(exc)})
        else:
            raise AssertionError(f"refusal {name}: FsmTables accepted it")
    try:  # Rust: Phase is an enum of the phases it has (the vector test maps the strings)
        LmFsm(FsmTables(tok, load_genres(TOY_GENRES), 600), generation_phase="reasoning")
    except ValueError:
        pass
    else:
        raise AssertionError("LmFsm accepted generation_phase 'reasoning'")
    return out


def _vocab_table(tok: RecordingTokenizer) -> dict:
    return {"size": len(tok), "eos": tok.eos_token_id, "pad": tok.pad_token_id,
            "decode": [tok.decode([i]) for i in range(len(tok))],
            "encode": {k: _ids(v) for k, v in sorted(tok.encoded.items())}}


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
    tokenizers = {"main": tok, **{name: RecordingTokenizer(toy) for name, toy in TOY_VOCABS.items()}}
    runs += [_directed_run(tokenizers, genres_text, spec) for spec in DIRECTED_RUNS]
    refusals = refusal_vectors(tok)
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
        "vocab": _vocab_table(tok),
        "toy_vocabs": {name: _vocab_table(tokenizers[name]) for name in TOY_VOCABS}, "refusals": refusals,
        "genres_text": genres_text, "genres": genres, "fill_bits": _bits([FILL]),
        "max_new_tokens": lm_prompt.max_new_tokens(), "runs": runs, "parse": parse_vectors(parse_texts),
        "prompts": prompts,
    }


if __name__ == "__main__":  # `make coverage`: what the shared vectors reach of lm_fsm.py (writes nothing)
    lm_fsm_vectors()
