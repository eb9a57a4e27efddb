"""Simple mode: the 5 Hz LM planner loop shared by every backend, and the hand-off to text2music.

Upstream path (82252c2): ``inference.create_sample`` -> ``LLMHandler.create_sample_from_query`` ->
``generate_from_formatted_prompt`` -> ``_run_pt_single`` -> ``_generate_with_constrained_decoding`` (no CFG in
simple mode). Each step of that loop, restated here:

1. logits of the last position (prefill on the prompt, then one token at a time on the KV cache);
2. the constrained processor (:class:`acestep_ort.host.lm_fsm.LmFsm`) on the raw logits;
3. repetition penalty (transformers ``RepetitionPenaltyLogitsProcessor`` over prompt + generated ids) when
   ``!= 1.0``; 4. top-k; 5. top-p (float32 softmax of the *un-tempered* logits, first token always kept);
6. temperature and sampling: ``temperature <= 0`` -> argmax (parity mode); otherwise upstream calls
   ``torch.multinomial`` unseeded, which no other runtime can reproduce, so the project defines
   :func:`seeded_sample` (inverse CDF on a float64 softmax of ``logits / T``, one PCG64 uniform per step) and
   every backend uses it;
7. ``update_state`` with the chosen id; stop after appending ``eos_token_id`` or ``pad_token_id`` (when it differs).

The budget is ``max_new_tokens`` (3500 in simple mode). The backend only supplies the logits
(:class:`LmEngine`); everything else runs here once, so backends cannot disagree on host logic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from acestep_ort.host import lm_parse, lm_prompt
from acestep_ort.host.lm_fsm import FsmTables, LmFsm, load_genres
from acestep_ort.host.lm_tokenizer import LmTokenizer, genres_path
from acestep_ort.host.pipeline import Captures, GenerationRequest

TOPK_STORED = 8  # per-step raw logits kept in the golden (ids + values)


class LmEngine(Protocol):
    """A backend's LM: ``lm_start`` runs the prompt and returns the last position's logits ``[V]`` float32;
    ``lm_next`` feeds one token on the cached keys/values and returns the next logits."""

    def lm_start(self, prompt_ids: np.ndarray) -> np.ndarray: ...

    def lm_next(self, token_id: int) -> np.ndarray: ...


@dataclass(frozen=True)
class SamplingParams:
    """``create_sample_from_query`` arguments; parity mode is greedy (``temperature=0``)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0  # the project's sampler only (upstream is unseeded)


@dataclass(frozen=True)
class PlannerRequest:
    query: str
    instrumental: bool = False
    vocal_language: str | None = None
    max_duration: int = 600  # upstream: GPU tier (240 s without GPU, 480 up to 24 GB, 600 above); pinned here
    sampling: SamplingParams = SamplingParams()


@dataclass
class PlannerResult:
    prompt: str
    prompt_ids: np.ndarray
    tokens: np.ndarray
    logits: np.ndarray  # [steps, V] raw logits before any processor
    allowed: np.ndarray  # [steps, V] bool: finite after the FSM
    margins: np.ndarray  # [steps] top-1 minus top-2 of the constrained logits (inf where one token is allowed)
    text: str
    metadata: dict  # create_sample_from_query's dict
    sample: dict  # inference.create_sample's fields
    timings: dict = field(default_factory=dict)


def user_metadata(vocal_language: str | None) -> dict[str, str]:
    """``create_sample_from_query``: a language other than None/blank/"unknown" is injected verbatim."""
    if vocal_language and vocal_language.strip() and vocal_language.strip().lower() != "unknown":
        return {"language": vocal_language.strip()}
    return {}


def repetition_penalty(ids: list[int], scores: np.ndarray, penalty: float) -> np.ndarray:
    """transformers ``RepetitionPenaltyLogitsProcessor``: for every id seen, score < 0 -> *penalty, else /penalty."""
    if penalty == 1.0:
        return scores
    out = scores.copy()
    seen = np.unique(np.asarray(ids, dtype=np.int64))
    vals = out[seen]
    out[seen] = np.where(vals < 0, vals * np.float32(penalty), vals / np.float32(penalty)).astype(np.float32)
    return out


def top_k_filter(scores: np.ndarray, k: int | None) -> np.ndarray:
    """``_apply_top_k_filter``: everything below the k-th largest value becomes -inf."""
    if k is None or k <= 0:
        return scores
    kth = np.sort(scores)[::-1][min(k, scores.size) - 1]
    return np.where(scores < kth, np.float32(-np.inf), scores).astype(np.float32)


def top_p_filter(scores: np.ndarray, p: float | None) -> np.ndarray:
    """``_apply_top_p_filter``: sort descending, float32 softmax cumsum, drop tokens after the mass exceeds p."""
    if p is None or not 0.0 < p < 1.0:
        return scores
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order].astype(np.float32)
    finite = sorted_scores - sorted_scores[0]
    probs = np.exp(finite, dtype=np.float32)
    probs /= probs.sum(dtype=np.float32)
    cum = np.cumsum(probs, dtype=np.float32)
    remove = cum > np.float32(p)
    remove[1:] = remove[:-1].copy()
    remove[0] = False
    out = scores.copy()
    out[order[remove]] = -np.inf
    return out


def seeded_sample(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """The project's sampler: float64 softmax of ``scores / T`` and the first id whose CDF exceeds one uniform."""
    logits = scores.astype(np.float64) / float(temperature)
    logits -= np.max(logits)
    probs = np.exp(logits)
    cdf = np.cumsum(probs / probs.sum())
    return int(min(np.searchsorted(cdf, rng.random(), side="right"), scores.size - 1))


def margin(constrained: np.ndarray) -> float:
    finite = constrained[np.isfinite(constrained)]
    if finite.size < 2:
        return float("inf")
    top2 = np.partition(finite, finite.size - 2)[-2:]
    return float(top2[1] - top2[0])


def run_planner(engine: LmEngine, tok: LmTokenizer, tables: FsmTables, request: PlannerRequest,
                prompt: str | None = None, max_new_tokens: int | None = None) -> PlannerResult:
    """Upstream's simple-mode generation, step for step; ``prompt`` overrides the host-rendered chat prompt."""
    import time

    prompt = prompt if prompt is not None else lm_prompt.inspiration_prompt(request.query, request.instrumental)
    prompt_ids = np.asarray(tok.encode_prompt(prompt), dtype=np.int64)
    budget = lm_prompt.max_new_tokens() if max_new_tokens is None else max_new_tokens
    fsm = LmFsm(tables, generation_phase="understand", user_metadata=user_metadata(request.vocal_language),
                skip_genres=False, skip_caption=False, skip_language=False)
    s = request.sampling
    rng = np.random.Generator(np.random.PCG64(s.seed))
    ids = [int(i) for i in prompt_ids]
    tokens, raws, allowed, margins = [], [], [], []
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    start = time.perf_counter()
    logits = engine.lm_start(prompt_ids)
    prefill_s = time.perf_counter() - start
    for _ in range(budget):
        raw = np.asarray(logits, dtype=np.float32).reshape(-1)
        constrained = fsm.process(ids, raw)
        allowed.append(np.isfinite(constrained))
        margins.append(margin(constrained))
        scores = repetition_penalty(ids, constrained, s.repetition_penalty)
        scores = top_p_filter(top_k_filter(scores, s.top_k), s.top_p)
        token = int(np.argmax(scores)) if s.temperature <= 0 else seeded_sample(scores, s.temperature, rng)
        fsm.update(token)
        raws.append(raw)
        tokens.append(token)
        ids.append(token)
        if token == eos or token == pad:
            break
        logits = engine.lm_next(token)
    total = time.perf_counter() - start
    text = tok.decode(tokens)
    metadata = lm_parse.create_sample_fields(text, request.instrumental)
    return PlannerResult(
        prompt=prompt, prompt_ids=prompt_ids, tokens=np.asarray(tokens, dtype=np.int64),
        logits=np.stack(raws).astype(np.float32), allowed=np.stack(allowed), margins=np.asarray(margins),
        text=text, metadata=metadata, sample=lm_parse.create_sample_result(metadata),
        timings={"lm_prefill": prefill_s, "lm_decode": total - prefill_s, "lm_tokens": float(len(tokens))},
    )


def teacher_forced_logits(engine: LmEngine, prompt_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Logits of every step with the reference tokens fed in (isolates the model error from token choices)."""
    out = [np.asarray(engine.lm_start(prompt_ids), dtype=np.float32).reshape(-1)]
    for token in tokens[:-1]:
        out.append(np.asarray(engine.lm_next(int(token)), dtype=np.float32).reshape(-1))
    return np.stack(out)


def mask_digests(allowed: np.ndarray) -> np.ndarray:
    """One 16-hex digest per step of the packed allowed-token mask (the golden keeps these, not the masks)."""
    return np.asarray([hashlib.sha256(np.packbits(row).tobytes()).hexdigest()[:16] for row in allowed])


def captures(result: PlannerResult) -> dict[str, np.ndarray]:
    """The LM capture points (DESIGN §4): token stream, per-step top-k raw logits, mask digests, metadata."""
    k = min(TOPK_STORED, result.logits.shape[1])
    top_ids = np.argsort(-result.logits, axis=1, kind="stable")[:, :k]
    return {
        "lm_prompt_ids": result.prompt_ids,
        "lm_tokens": result.tokens,
        "lm_logits": result.logits,
        "lm_topk_ids": top_ids.astype(np.int64),
        "lm_topk_logits": np.take_along_axis(result.logits, top_ids, axis=1).astype(np.float32),
        "lm_allowed": result.allowed,
        "lm_mask_digests": mask_digests(result.allowed),
        "lm_margins": result.margins.astype(np.float64),
        "lm_text": np.asarray(result.text),
        "lm_metadata": np.asarray(json.dumps(result.metadata, ensure_ascii=False, sort_keys=True)),
    }


def text2music_fields(sample: dict, language_fallback: str, duration_fallback: float | None) -> dict:
    """The planner's fields as a text2music request (upstream's UI/API hand-off): caption, lyrics, bpm, keyscale,
    timesignature, duration, and the detected language as the lyric language ("unknown" when empty). Values pass
    through unvalidated, as upstream's UI passes them. A missing duration falls back to ``duration_fallback`` (the
    case's cap; None = upstream's "no duration", as its UI would pass -1)."""
    return {
        "caption": sample.get("caption", ""), "lyrics": sample.get("lyrics", ""),
        "language": sample.get("language") or language_fallback,
        "bpm": sample.get("bpm"),
        "keyscale": sample.get("keyscale", ""), "timesignature": sample.get("timesignature", ""),
        "duration": float(sample["duration"]) if sample.get("duration") else duration_fallback,
    }


def fsm_tables(tok: LmTokenizer, checkpoint_dir, max_duration: int) -> FsmTables:
    """The FSM tables for a tokenizer, the genres list and ``max_duration``, built once per combination and kept
    on the tokenizer object (upstream builds its processor once per loaded LM)."""
    path = genres_path(checkpoint_dir)
    key = (str(path), int(max_duration))
    cache = tok.__dict__.setdefault("_fsm_tables", {})
    if key not in cache:
        cache[key] = FsmTables(tok, load_genres(path.read_text(encoding="utf-8")), int(max_duration))
    return cache[key]


def case_vocal_language(case) -> str | None:
    """A simple_mode case's ``language`` is the ``vocal_language`` argument ("unknown" = none)."""
    lang = getattr(case, "language", "unknown")
    return None if not lang or lang == "unknown" else lang


CPU_MAX_DURATION = 240  # upstream gpu_config: max_duration_with_lm without a GPU (the reference platform)


def case_max_duration(case) -> int:
    """A simple_mode case's ``duration`` pins upstream's machine-dependent ``max_duration`` (the cap of the LM's
    ``duration`` field and so of the audio); without one, upstream's value on a CPU-only machine, 240 s."""
    return int(case.duration) if case.duration else CPU_MAX_DURATION


def case_request(case, sampling: SamplingParams | None = None) -> PlannerRequest:
    """simple_mode case -> planner request (see :func:`case_max_duration`)."""
    return PlannerRequest(query=case.query, instrumental=case.instrumental,
                          vocal_language=case_vocal_language(case), max_duration=case_max_duration(case),
                          sampling=sampling or SamplingParams())


def text2music_request(result: PlannerResult, case) -> GenerationRequest:
    fields = text2music_fields(result.sample, "unknown", case.duration)
    return GenerationRequest(seeds=case.seeds, shift=case.shift, timesteps=case.timesteps, **fields)


def run_simple_mode(lm: LmEngine, tok: LmTokenizer, checkpoint_dir, case, text2music, prompt: str | None = None
                    ) -> Captures:
    """Planner, then ``text2music(GenerationRequest) -> Captures``; LM captures are merged in."""
    req = case_request(case)
    result = run_planner(lm, tok, fsm_tables(tok, checkpoint_dir, req.max_duration), req, prompt=prompt)
    caps = text2music(text2music_request(result, case))
    caps.arrays.update(captures(result))
    caps.timings.update(result.timings)
    caps.planner = result
    return caps


def golden_planner_record(lm_hashes: dict[str, str], case) -> dict:
    """What a simple-mode golden depends on besides the case file: the LM files, the genres list (an input,
    not part of upstream's checkpoint), the pinned ``max_duration`` and the sampling mode."""
    return {"lm_files": dict(sorted(lm_hashes.items())), "max_duration": case_max_duration(case),
            "sampling": "greedy (temperature 0)"}
