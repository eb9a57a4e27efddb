"""Upstream's constrained-decoding FSM for the 5 Hz LM, re-implemented in numpy (rule for rule, quirks included).

Source of every rule: ``MetadataConstrainedLogitsProcessor`` in upstream's ``acestep/constrained_logits_processor.py``
at commit 82252c2 (``__init__``, ``_precompute_tokens``, ``_precompute_audio_code_tokens``,
``_build_keyscale_prefix_tree``, ``_build_numeric_prefix_tree``, ``_build_language_prefix_tree``,
``_load_genres_vocab``, ``_precompute_char_token_mapping``, ``_get_allowed_genres_tokens``,
``_get_allowed_tokens_for_fixed_string``, ``__call__``, ``_process_single_sequence``,
``_transition_to_next_state``, ``update_state``). No code is copied; names follow upstream's so the two can be read
side by side. ``docs/lm_planner.md`` lists the rules and the quirks kept on purpose.

Scope: the phases simple mode uses (``generation_phase`` "understand": CoT metadata, then free text with in-range
audio codes masked) and "cot"; the audio-code phase (``CODES_GENERATION``) is implemented for completeness of the
state machine (EOS blocked until ``target_codes``, then forced). Batch size 1 (upstream's single-item path).
Per-phase temperatures (``metadata_temperature``/``codes_temperature``) are not used by simple mode and are not
implemented. The genres list must be given (upstream without its file leaves genres unconstrained and then
mis-counts the forced newline as the first letter of ``keyscale:``; a port takes the list as an input instead).

Logits are one float32 row ``[V]``; masked entries become ``-inf`` exactly as upstream's in-place whitelist does
(allowed entries keep their values; order-free sets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from acestep_ort.host import lm_tokenizer as C
from acestep_ort.host.lm_tokenizer import LmTokenizer

NEG_INF = np.float32(-np.inf)
_AUDIO_CODE_RE = re.compile(r"^<\|audio_code_(\d+)\|>$")
FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")


class S(Enum):
    """``FSMState`` (upstream names)."""

    THINK_TAG = 1
    NEWLINE_AFTER_THINK = 2
    BPM_NAME = 3
    BPM_VALUE = 4
    NEWLINE_AFTER_BPM = 5
    CAPTION_NAME = 6
    CAPTION_VALUE = 7
    DURATION_NAME = 8
    DURATION_VALUE = 9
    NEWLINE_AFTER_DURATION = 10
    GENRES_NAME = 11
    GENRES_VALUE = 12
    NEWLINE_AFTER_GENRES = 13
    KEYSCALE_NAME = 14
    KEYSCALE_VALUE = 15
    NEWLINE_AFTER_KEYSCALE = 16
    LANGUAGE_NAME = 17
    LANGUAGE_VALUE = 18
    TIMESIG_NAME = 19
    TIMESIG_VALUE = 20
    NEWLINE_AFTER_TIMESIG = 21
    THINK_END_TAG = 22
    CODES_GENERATION = 23
    COMPLETED = 24


FIXED_STRINGS = {
    S.THINK_TAG: "<think>", S.NEWLINE_AFTER_THINK: "\n", S.BPM_NAME: "bpm:", S.CAPTION_NAME: "caption:",
    S.DURATION_NAME: "duration:", S.GENRES_NAME: "genres:", S.KEYSCALE_NAME: "keyscale:",
    S.LANGUAGE_NAME: "language:", S.TIMESIG_NAME: "timesignature:", S.THINK_END_TAG: "</think>",
}
_NAME_STATE = {"bpm": S.BPM_NAME, "caption": S.CAPTION_NAME, "duration": S.DURATION_NAME, "genres": S.GENRES_NAME,
               "keyscale": S.KEYSCALE_NAME, "language": S.LANGUAGE_NAME, "timesignature": S.TIMESIG_NAME}
# update_state's caption-ending map (caption and bpm are not in it upstream).
_CAPTION_ENDING_TARGET = {"duration": S.DURATION_VALUE, "genres": S.GENRES_VALUE, "keyscale": S.KEYSCALE_VALUE,
                          "language": S.LANGUAGE_VALUE, "timesignature": S.TIMESIG_VALUE}

PrefixTree = dict[tuple[int, ...], set[int]]


def load_genres(text: str) -> list[str]:
    """``_load_genres_vocab``: one genre per line, stripped, blank and ``#`` lines skipped, lower-cased."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.lower())
    return out


class FsmTables:
    """Everything upstream precomputes once per tokenizer (``__init__``); shared by every generation."""

    def __init__(self, tok: LmTokenizer, genres: list[str], max_duration: int = C.DURATION_MAX):
        if not genres:
            raise ValueError("the genres vocabulary is empty: the planner needs upstream's genres_vocab.txt (or the "
                             "synthetic checkpoint's) as an input; see docs/lm_planner.md")
        if not C.DURATION_MIN <= int(max_duration) <= C.DURATION_MAX:
            # upstream builds an empty duration tree here and then masks every token at "duration:" (argmax of an
            # all -inf row = token 0); the port refuses instead
            raise ValueError(f"max_duration {max_duration} is outside {C.DURATION_MIN}..{C.DURATION_MAX} seconds "
                             "(upstream's duration field could not be generated at all)")
        self.tok = tok
        self.vocab_size = len(tok)
        self.max_duration = int(max_duration)
        enc = tok.encode

        def last(text: str) -> int | None:
            ids = enc(text)
            return ids[-1] if ids else None

        # _precompute_tokens
        self.digit_tokens = {d: last(str(d)) for d in range(10) if enc(str(d))}
        self.newline_token = last("\n")
        self.backtick_token = last("`")
        self.eos_token_id = tok.eos_token_id
        self.pad_token_id = tok.pad_token_id
        # decoded text of every id (upstream decodes each id in three places)
        self.token_text = [tok.decode([i]) for i in range(self.vocab_size)]
        # _precompute_audio_code_tokens: only codes 0..63999 count; others are plain text to the FSM
        codes = []
        for i, text in enumerate(self.token_text):
            m = _AUDIO_CODE_RE.match(text)
            if m and 0 <= int(m.group(1)) <= C.MAX_AUDIO_CODE:
                codes.append(i)
        self.audio_code_ids = np.asarray(codes, dtype=np.int64)
        self.audio_code_mask = np.zeros(self.vocab_size, dtype=np.float32)
        self.audio_code_mask[self.audio_code_ids] = NEG_INF
        self.non_audio_code_mask = np.full(self.vocab_size, NEG_INF, dtype=np.float32)
        self.non_audio_code_mask[self.audio_code_ids] = 0
        if self.eos_token_id is not None:
            self.non_audio_code_mask[self.eos_token_id] = 0
        # _precompute_char_token_mapping
        self.char_to_tokens: dict[str, set[int]] = {}
        self.token_to_norm: dict[int, str] = {}
        for i, text in enumerate(self.token_text):
            if not text:
                continue
            low = text.lower()
            self.token_to_norm[i] = low.rstrip() if low.strip() else " "
            self.char_to_tokens.setdefault(text[0].lower(), set()).add(i)
            stripped = text.lstrip()
            if stripped and stripped != text:
                self.char_to_tokens.setdefault(stripped[0].lower(), set()).add(i)
        # prefix trees
        self.bpm_tree = self._value_tree([str(v) for v in range(C.BPM_MIN, C.BPM_MAX + 1)], "bpm")
        self.duration_tree = self._value_tree(
            [str(v) for v in range(C.DURATION_MIN, self.max_duration + 1)], "duration")
        self.timesig_tree = self._value_tree([str(v) for v in C.VALID_TIME_SIGNATURES], "timesignature")
        self.keyscale_tree = self._value_tree(list(C.VALID_KEYSCALES), "keyscale", first_must_be_note=True)
        self.language_tree = self._value_tree(list(C.VALID_LANGUAGES), "language", skip_empty=True)
        # _load_genres_vocab / _build_genres_trie
        self.genres = list(genres)
        self.genres_trie: dict = {}
        for genre in self.genres:
            node = self.genres_trie
            for ch in genre:
                node = node.setdefault(ch, {})
            node["_end"] = True
        self._fixed_cache: dict[str, list[int]] = {}

    def _value_tree(self, values: list[str], name: str, first_must_be_note: bool = False,
                    skip_empty: bool = False) -> PrefixTree:
        """``_build_numeric/keyscale/language_prefix_tree``: tokens of ``"name: value"`` after those of
        ``"name:"``; a value whose tokens do not start with the context's is silently dropped."""
        context = self.tok.encode(f"{name}:")
        tree: PrefixTree = {}
        for value in values:
            full = self.tok.encode(f"{name}: {value}")
            if full[: len(context)] != context:
                continue
            ids = full[len(context):]
            if (first_must_be_note or skip_empty) and not ids:
                continue
            if first_must_be_note:
                first = self.tok.decode([ids[0]]).lstrip()
                if (first[0].upper() if first else "") not in "ABCDEFG":
                    continue
            for i in range(len(ids) + 1):
                allowed = tree.setdefault(tuple(ids[:i]), set())
                if i < len(ids):
                    allowed.add(ids[i])
                elif self.newline_token:
                    allowed.add(self.newline_token)
        return tree

    def fixed_string_tokens(self, remaining: str) -> list[int]:
        """``_get_allowed_tokens_for_fixed_string``: the longest prefix that encodes to one token, else the
        fallback candidate list (longest prefix first)."""
        if remaining in self._fixed_cache:
            return self._fixed_cache[remaining]
        result: list[int] = []
        for end in range(len(remaining), 0, -1):
            ids = self.tok.encode(remaining[:end])
            if len(ids) == 1:
                result = [ids[0]]
                break
        if not result and remaining:
            best: dict[int, int] = {}
            for end in range(1, min(len(remaining) + 1, 20)):
                prefix = remaining[:end]
                ids = self.tok.encode(prefix)
                if ids:
                    first = ids[0]
                    np_, nd = prefix.lstrip().lower(), self.tok.decode([first]).lstrip().lower()
                    if (nd.startswith(np_) or np_.startswith(nd)) and (first not in best or end > best[first]):
                        best[first] = end
            result = [t for t, _ in sorted(best.items(), key=lambda x: x[1], reverse=True)]
        self._fixed_cache[remaining] = result
        return result

    def genres_node(self, prefix: str):
        node = self.genres_trie
        for ch in prefix.lower():
            if ch not in node:
                return None
            node = node[ch]
        return node


def whitelist(scores: np.ndarray, allowed) -> np.ndarray:
    """``_apply_whitelist_inplace``: allowed ids keep their values, everything else is -inf."""
    out = np.full_like(scores, NEG_INF)
    idx = np.fromiter(allowed, dtype=np.int64) if not isinstance(allowed, np.ndarray) else allowed
    if idx.size:
        out[idx] = scores[idx]
    return out


@dataclass
class LmFsm:
    """Per-generation state of upstream's processor (set up like ``LLMHandler._setup_constrained_processor``)."""

    tables: FsmTables
    generation_phase: str = "understand"
    user_metadata: dict[str, str] = field(default_factory=dict)
    skip_genres: bool = False
    skip_caption: bool = False
    skip_language: bool = False
    target_duration: float | None = None
    stop_at_reasoning: bool = False

    def __post_init__(self):
        if self.generation_phase not in ("cot", "codes", "understand"):
            raise ValueError(f"invalid generation phase {self.generation_phase!r}")
        self.user = {f: self.user_metadata.get(f) for f in FIELD_ORDER}
        self.target_codes = (int(self.target_duration * 5)
                             if self.target_duration is not None and self.target_duration > 0 else None)
        self.state = S.THINK_TAG
        self.position_in_state = 0
        self.accumulated_value = ""
        self.accumulated_token_ids: list[int] = []
        self.codes_count = 0
        self.queue: list[int] = []
        self.current_user_field: str | None = None
        self.caption_after_newline = False
        self.caption_token_count = 0
        self.caption_ending = False
        self.pending_field_name = ""
        self.next_state = self._transitions()

    # ----------------------------------------------------------------- transitions
    def _next_field_state(self, current: str) -> S:
        """``_get_next_field_state``."""
        if current not in FIELD_ORDER:
            return S.THINK_END_TAG
        for f in FIELD_ORDER[FIELD_ORDER.index(current) + 1:]:
            if (f == "genres" and self.skip_genres) or (f == "caption" and self.skip_caption) or (
                    f == "language" and self.skip_language):
                continue
            return _NAME_STATE[f]
        return S.THINK_END_TAG

    def _transitions(self) -> dict[S, S]:
        """``_build_state_transitions``."""
        nxt = {S.THINK_TAG: S.NEWLINE_AFTER_THINK, S.NEWLINE_AFTER_THINK: S.BPM_NAME,
               S.THINK_END_TAG: S.CODES_GENERATION, S.CODES_GENERATION: S.COMPLETED,
               S.BPM_NAME: S.BPM_VALUE, S.BPM_VALUE: self._next_field_state("bpm")}
        if not self.skip_caption:
            nxt[S.CAPTION_NAME] = S.CAPTION_VALUE
            nxt[S.CAPTION_VALUE] = self._next_field_state("caption")
        nxt[S.DURATION_NAME] = S.DURATION_VALUE
        nxt[S.DURATION_VALUE] = self._next_field_state("duration")
        if not self.skip_genres:
            nxt[S.GENRES_NAME] = S.GENRES_VALUE
            nxt[S.GENRES_VALUE] = self._next_field_state("genres")
        nxt[S.KEYSCALE_NAME] = S.KEYSCALE_VALUE
        nxt[S.KEYSCALE_VALUE] = self._next_field_state("keyscale")
        if not self.skip_language:
            nxt[S.LANGUAGE_NAME] = S.LANGUAGE_VALUE
            nxt[S.LANGUAGE_VALUE] = self._next_field_state("language")
        nxt[S.TIMESIG_NAME] = S.TIMESIG_VALUE
        nxt[S.TIMESIG_VALUE] = S.THINK_END_TAG
        return nxt

    def _reset_field(self) -> None:
        self.position_in_state = 0
        self.accumulated_value = ""
        self.accumulated_token_ids = []

    def _transition(self) -> None:
        """``_transition_to_next_state`` (understand phase: ``</think>`` leads to COMPLETED)."""
        if self.state not in self.next_state:
            return
        old = self.state
        nxt = self.next_state[old]
        if old == S.THINK_END_TAG and self.generation_phase == "understand":
            nxt = S.COMPLETED
        self.state = nxt
        self._reset_field()
        self.caption_after_newline = False
        self.caption_token_count = 0
        self.caption_ending = False
        self.pending_field_name = ""

    # ----------------------------------------------------------------- masking
    def process(self, input_ids: list[int], scores: np.ndarray) -> np.ndarray:
        """``__call__`` for one row: returns the constrained logits (a new array; ``scores`` is not modified)."""
        t = self.tables
        scores = np.asarray(scores, dtype=np.float32).copy()
        if self.state == S.COMPLETED:
            if self.generation_phase == "understand":
                scores = scores + t.audio_code_mask
            return scores
        if self.generation_phase == "codes" and self.state == S.THINK_TAG:
            end = t.tok.encode("</think>")
            if end and any(input_ids[i:i + len(end)] == end for i in range(len(input_ids) - len(end) + 1)):
                self.state = S.CODES_GENERATION
                self.codes_count = 0
        if self.state == S.CODES_GENERATION:
            scores = scores + t.non_audio_code_mask
            if self.target_codes is not None and t.eos_token_id is not None:
                if self.codes_count < self.target_codes:
                    scores[t.eos_token_id] = NEG_INF
                else:
                    scores = whitelist(scores, [t.eos_token_id])
            return scores
        return self._process_single(input_ids, scores)

    def _start_injection(self, name: str, scores: np.ndarray, empty: bool) -> np.ndarray | None:
        """The per-field "user-provided value" branch: queue ``encode(" {value}\\n")`` and force its first id."""
        value = self.user[name]
        if value is None or self.queue or not empty:
            return None
        ids = self.tables.tok.encode(f" {value}\n")
        if not ids:
            return None
        self.queue = list(ids)
        self.current_user_field = name
        return whitelist(scores, [ids[0]])

    def _process_single(self, input_ids: list[int], scores: np.ndarray) -> np.ndarray:
        """``_process_single_sequence``."""
        t = self.tables
        nl = t.newline_token
        if self.queue:
            return whitelist(scores, [self.queue[0]])
        st = self.state
        if st in FIXED_STRINGS:
            fixed = FIXED_STRINGS[st]
            allowed = t.fixed_string_tokens(fixed[self.position_in_state:])
            if allowed:
                if st == S.THINK_END_TAG and self.stop_at_reasoning and len(fixed) - self.position_in_state <= 10:
                    if t.eos_token_id is not None:
                        return whitelist(scores, [t.eos_token_id])
                return whitelist(scores, allowed)
            if st == S.THINK_END_TAG and self.stop_at_reasoning and t.eos_token_id is not None:
                return whitelist(scores, [t.eos_token_id])
            self._transition()
            if self.state in FIXED_STRINGS:
                return scores
            return self._process_single(input_ids, np.zeros_like(scores))  # upstream zeroes the scores here
        if st == S.BPM_VALUE:
            injected = self._start_injection("bpm", scores, not self.accumulated_token_ids)
            if injected is not None:
                return injected
            return whitelist(scores, self._tree_allowed(t.bpm_tree))
        if st == S.CAPTION_VALUE:
            injected = self._start_injection("caption", scores, not self.accumulated_value)
            if injected is not None:
                return injected
            if self.caption_after_newline:
                top = int(np.argmax(scores))  # raw logits of this step, before any mask
                text = t.token_text[top]
                self.caption_after_newline = False
                if len(text) > 0 and text[0] not in " \t":
                    self.caption_ending = True
                    self.pending_field_name = ""
                    return scores
            if self.caption_ending:
                return scores
            if t.backtick_token is not None:
                scores[t.backtick_token] = NEG_INF
            if t.audio_code_ids.size:
                scores = scores + t.audio_code_mask
            if self.caption_token_count >= 512 and nl is not None:
                return whitelist(scores, [nl])
            return scores
        if st == S.DURATION_VALUE:
            injected = self._start_injection("duration", scores, not self.accumulated_token_ids)
            if injected is not None:
                return injected
            if self.target_duration is not None:
                target = str(int(self.target_duration))
                pos = len(self.accumulated_value)
                if pos < len(target):
                    digit = int(target[pos])
                    return whitelist(scores, [t.digit_tokens[digit]]) if digit in t.digit_tokens else scores
                return whitelist(scores, [nl]) if nl else scores
            return whitelist(scores, self._tree_allowed(t.duration_tree))
        if st == S.GENRES_VALUE:
            injected = self._start_injection("genres", scores, not self.accumulated_value)
            if injected is not None:
                return injected
            allowed = self._genres_allowed()
            if allowed:
                return whitelist(scores, allowed)
            return whitelist(scores, [nl]) if nl else scores
        if st == S.KEYSCALE_VALUE:
            injected = self._start_injection("keyscale", scores, not self.accumulated_token_ids)
            if injected is not None:
                return injected
            return self._tree_step(t.keyscale_tree, scores)
        if st == S.LANGUAGE_VALUE:
            injected = self._start_injection("language", scores, not self.accumulated_token_ids)
            if injected is not None:
                return injected
            if not self.accumulated_token_ids:
                candidates = list(t.language_tree.get((), ()))
                if candidates:
                    # top-1 among the first tokens of every language, even when sampling
                    best = candidates[int(np.argmax(scores[np.asarray(candidates, dtype=np.int64)]))]
                    return whitelist(scores, [best])
                return whitelist(scores, [nl]) if nl else scores
            return self._tree_step(t.language_tree, scores)
        if st == S.TIMESIG_VALUE:
            injected = self._start_injection("timesignature", scores, not self.accumulated_token_ids)
            if injected is not None:
                return injected
            key = tuple(self.accumulated_token_ids)
            if key in t.timesig_tree and nl in t.timesig_tree[key]:
                return whitelist(scores, [nl]) if nl else scores
            return whitelist(scores, self._tree_allowed(t.timesig_tree))
        return scores

    def _tree_allowed(self, tree: PrefixTree) -> list[int]:
        """Numeric fields: the tree's continuations (newline included where the value is complete)."""
        return list(tree.get(tuple(self.accumulated_token_ids), ()))

    def _tree_step(self, tree: PrefixTree, scores: np.ndarray) -> np.ndarray:
        """Keyscale / language after the first token: a complete value forces the newline."""
        nl = self.tables.newline_token
        key = tuple(self.accumulated_token_ids)
        if key in tree and nl in tree[key]:
            return whitelist(scores, [nl]) if nl else scores
        allowed = list(tree.get(key, ()))
        if allowed:
            return whitelist(scores, allowed)
        return whitelist(scores, [nl]) if nl else scores

    def _genres_allowed(self) -> list[int]:
        """``_get_allowed_genres_tokens`` (the caption-matched trie is never built upstream: full trie only)."""
        t = self.tables
        prefix = self.accumulated_value.lower().strip()
        node = t.genres_trie if prefix == "" else t.genres_node(prefix)
        if node is None:
            return [t.newline_token] if t.newline_token else []
        next_chars = {k for k in node if k not in ("_end", "_tokens")}
        complete = node.get("_end", False)
        if not next_chars:
            return [t.newline_token] if complete and t.newline_token else []
        candidates: set[int] = set()
        for ch in next_chars:
            candidates |= t.char_to_tokens.get(ch, set())
        allowed = set()
        for tid in candidates:
            norm = t.token_to_norm.get(tid, "")
            if not norm or not norm.strip():
                if " " in next_chars or "," in next_chars:
                    allowed.add(tid)
                continue
            if t.genres_node(prefix + norm) is not None:
                allowed.add(tid)
        if complete and t.newline_token:
            allowed.add(t.newline_token)
        return sorted(allowed)

    # ----------------------------------------------------------------- state update
    def update(self, token_id: int) -> None:
        """``update_state`` after a token was chosen."""
        t = self.tables
        if self.state == S.COMPLETED:
            return
        if self.state == S.CODES_GENERATION:
            self.codes_count += 1
            return
        if self.queue:
            self.queue.pop(0)  # upstream only logs a mismatch between the queued and the chosen id
            if not self.queue:
                name, self.current_user_field = self.current_user_field, None
                self.state = self._next_field_state(name)
                self._reset_field()
            return
        text = t.token_text[token_id]
        st = self.state
        if st in FIXED_STRINGS:
            self.position_in_state += len(text)
            if self.position_in_state >= len(FIXED_STRINGS[st]):
                if st == S.THINK_END_TAG and self.stop_at_reasoning:
                    self.state = S.COMPLETED
                    self._reset_field()
                else:
                    self._transition()
        elif st in (S.BPM_VALUE, S.DURATION_VALUE, S.TIMESIG_VALUE):
            if token_id == t.newline_token:
                self._transition()
            else:
                self.accumulated_token_ids.append(token_id)
                if text.strip().isdigit():
                    self.accumulated_value += text.strip()
        elif st == S.GENRES_VALUE:
            if token_id == t.newline_token:
                self._transition()
            else:
                self.accumulated_value += text
        elif st == S.CAPTION_VALUE:
            self.caption_token_count += 1
            self.accumulated_value += text
            self.caption_after_newline = "\n" in text
            if self.caption_ending:
                self.pending_field_name += text
                if ":" in text:
                    name = self.pending_field_name.strip().rstrip(":").strip().lower()
                    if name in _CAPTION_ENDING_TARGET:
                        self.state = _CAPTION_ENDING_TARGET[name]
                        self._reset_field()
                        self.caption_ending = False
                        self.pending_field_name = ""
                    else:
                        self.caption_ending = False
                        self.pending_field_name = ""
                        self._transition()
        elif st in (S.KEYSCALE_VALUE, S.LANGUAGE_VALUE):
            if token_id == t.newline_token:
                self._transition()
            else:
                self.accumulated_token_ids.append(token_id)
                self.accumulated_value += text
