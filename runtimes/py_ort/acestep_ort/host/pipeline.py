"""The text2music / turbo / ODE orchestration shared by every Python backend.

A backend supplies the neural stages (:class:`Engine`); this module owns everything between them exactly once:
prompt strings, token limits, right-padding, packing inputs, latent length, context latents, the schedule, the
Euler loop with the final x0 step, tiled VAE decoding, anti-clipping and -1 dBFS normalization. The reference
(``acestep_parity.torch_ref``) and the ONNX Runtime backend (``acestep_ort``) both run this function, so they
cannot disagree on host logic, only on the stages they implement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from acestep_ort.host import audio as audio_post
from acestep_ort.host import latents as lat
from acestep_ort.host import prompts, schedule, tiling


@dataclass(frozen=True)
class GenerationRequest:
    """What one text2music generation needs (a case file maps onto this)."""

    caption: str
    lyrics: str = ""
    language: str = prompts.DEFAULT_LANGUAGE
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    duration: float | None = None
    seeds: tuple[int, ...] = (42,)
    shift: float = 1.0
    timesteps: tuple[float, ...] | None = None
    instruction: str = prompts.DEFAULT_DIT_INSTRUCTION

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


class Engine(Protocol):
    """The neural stages a backend implements; numpy in, numpy out, float32 / int64."""

    def tokenize(self, text: str, max_length: int) -> np.ndarray: ...  # [L] int64

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray: ...  # [B, Lt] -> [B, Lt, D_text]

    def embed_lyrics(self, input_ids: np.ndarray) -> np.ndarray: ...  # [B, Ll] -> [B, Ll, D_text]

    def encode_condition(
        self, text_hidden_states: np.ndarray, text_attention_mask: np.ndarray, lyric_hidden_states: np.ndarray,
        lyric_attention_mask: np.ndarray, timbre_reference: np.ndarray, timbre_order: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]: ...  # encoder_hidden_states [B, Le, H], encoder_attention_mask [B, Le]

    def noise(self, seeds: tuple[int, ...], frames: int) -> np.ndarray: ...  # [B, T, 64]

    def dit(self, xt: np.ndarray, t: np.ndarray, encoder_hidden_states: np.ndarray,
            context_latents: np.ndarray) -> np.ndarray: ...  # vt [B, T, 64]

    def decode_latents(self, latents: np.ndarray) -> np.ndarray: ...  # [1, 64, t] -> [1, 2, t*1920]


@dataclass
class Captures:
    """Every capture point of a run (DESIGN §4); ``xt[i]`` is the input of step i, ``xt[0] == noise``."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _pad_right(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to the batch maximum (upstream ``_pad_sequences``) and build the bool mask."""
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def encoder_inputs(engine: Engine, request: GenerationRequest, pad_id: int) -> dict[str, np.ndarray]:
    """Token ids and masks for both branches. Upstream repeats the same caption/lyrics for every batch item."""
    metas = prompts.metas_string(request.bpm, request.keyscale, request.timesignature, request.duration)
    caption_text = prompts.caption_prompt(request.caption, metas, request.instruction)
    lyric_text = prompts.lyric_prompt(request.lyrics, request.language)
    batch = request.batch_size
    text_ids, text_mask = _pad_right([engine.tokenize(caption_text, prompts.TEXT_MAX_TOKENS)] * batch, pad_id)
    lyric_ids, lyric_mask = _pad_right([engine.tokenize(lyric_text, prompts.LYRIC_MAX_TOKENS)] * batch, pad_id)
    return {"text_token_ids": text_ids, "text_attention_mask": text_mask,
            "lyric_token_ids": lyric_ids, "lyric_attention_mask": lyric_mask}


def run_text2music(
    engine: Engine,
    request: GenerationRequest,
    silence_latent: np.ndarray,
    pad_id: int,
    progress: Callable[[str, int, int], None] | None = None,
    vae_chunk: int = tiling.CPU_CHUNK_SIZE,
) -> Captures:
    """Run one request through ``engine`` and return every capture point.

    ``vae_chunk``: latent frames per VAE call (overlap 64); upstream's CPU tiling by default, a runtime's budget
    chunk (:class:`acestep_ort.host.tiling.VaeChunking`) otherwise."""
    caps = Captures()
    arrays = caps.arrays
    batch = request.batch_size
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        caps.timings[stage] = caps.timings.get(stage, 0.0) + now - clock
        clock = now

    arrays.update(encoder_inputs(engine, request, pad_id))
    lap("tokenize")
    arrays["text_hidden_states"] = engine.encode_text(arrays["text_token_ids"]).astype(np.float32)
    lap("text_encoder")
    arrays["lyric_hidden_states"] = engine.embed_lyrics(arrays["lyric_token_ids"]).astype(np.float32)
    lap("lyric_embedding")
    timbre, order = lat.timbre_reference(silence_latent, batch)
    enc, enc_mask = engine.encode_condition(
        arrays["text_hidden_states"], arrays["text_attention_mask"], arrays["lyric_hidden_states"],
        arrays["lyric_attention_mask"], timbre, order,
    )
    arrays["encoder_hidden_states"] = enc.astype(np.float32)
    arrays["encoder_attention_mask"] = enc_mask.astype(bool)
    lap("condition_encoder")

    frames = lat.latent_frames(request.duration)
    arrays["context_latents"] = lat.context_latents(silence_latent, frames, batch)
    sched = schedule.resolve_schedule(request.shift, list(request.timesteps) if request.timesteps else None)
    t32 = schedule.schedule_f32(sched)
    arrays["schedule"] = t32
    xt = engine.noise(request.seeds, frames).astype(np.float32)
    arrays["noise"] = xt.copy()
    lap("noise")

    xs, vs = [], []
    for i in range(len(t32)):
        xs.append(xt)
        t = np.full((batch,), t32[i], dtype=np.float32)
        vt = engine.dit(xt, t, arrays["encoder_hidden_states"], arrays["context_latents"]).astype(np.float32)
        vs.append(vt)
        xt = schedule.ode_update(xt, vt, sched, i)
        if progress is not None:
            progress("dit", i + 1, len(t32))
    arrays["xt"] = np.stack(xs)
    arrays["vt"] = np.stack(vs)
    arrays["pred_latents"] = xt
    lap("dit")

    if not np.all(np.isfinite(xt)):
        raise FloatingPointError("pred_latents contain NaN/Inf; refusing to decode (upstream raises here too)")
    latents_bct = np.ascontiguousarray(xt.transpose(0, 2, 1))
    on_tile = (lambda k, n: progress("vae", k, n)) if progress is not None else None
    decoded = tiling.tiled_decode(latents_bct, engine.decode_latents, vae_chunk, on_tile=on_tile).astype(np.float32)
    arrays["audio_decoded"] = audio_post.check_finite(decoded, "the VAE decoder (vae_decoder)")
    lap("vae")
    arrays["audio"] = audio_post.normalize_peak(audio_post.anti_clip(decoded))
    lap("postprocess")
    return caps
