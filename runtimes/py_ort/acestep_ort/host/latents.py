"""Latent length and context latents for text2music (upstream ``create_target_wavs`` and conditioning helpers).

The target length is ``frames // 1920`` with ``frames = int(max(0.1, round(d, 1)) * 48000)``, raised to at least
128 frames (5.12 s); there is no trimming afterwards. With no duration, upstream 82252c2 falls back to 120 s.
For text2music the source latents are the silence latent (tiled when longer than it) and the chunk mask is all
ones, so ``context_latents = [silence[:T] | 1.0]`` of shape [B, T, 128].
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48000
HOP = 1920
MIN_LATENT_FRAMES = 128
DEFAULT_DURATION_S = 120.0
TIMBRE_FIX_FRAME = 750


def latent_frames(duration: float | None) -> int:
    """Number of 25 Hz latent frames upstream generates for ``duration`` seconds."""
    if duration is None or float(duration) <= 0:
        duration = DEFAULT_DURATION_S
    seconds = max(0.1, round(float(duration), 1))
    frames = int(seconds * SAMPLE_RATE)
    return max(MIN_LATENT_FRAMES, frames // HOP)


def silence_slice(silence_latent: np.ndarray, length: int) -> np.ndarray:
    """``_get_silence_latent_slice``: the first ``length`` frames of ``silence_latent[0]`` ([T, C]), tiled if needed.

    ``silence_latent`` is given as stored on disk, [1, C, 15000]; upstream transposes it to [1, 15000, C] first.
    """
    frames = np.ascontiguousarray(silence_latent[0].T)  # [15000, C]
    available = frames.shape[0]
    if length > available:
        frames = np.tile(frames, ((length + available - 1) // available, 1))
    return frames[:length]


def context_latents(silence_latent: np.ndarray, length: int, batch: int) -> np.ndarray:
    """[B, T, 2C]: silence source latents followed by an all-ones chunk mask (float32)."""
    src = silence_slice(silence_latent, length).astype(np.float32)
    ctx = np.concatenate([src, np.ones_like(src)], axis=-1)
    return np.repeat(ctx[None], batch, axis=0)


def timbre_reference(silence_latent: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Timbre encoder input for text2music: ``silence[:, :750]`` once per item, and the order mask [0..B-1]."""
    ref = silence_slice(silence_latent, TIMBRE_FIX_FRAME).astype(np.float32)
    return np.repeat(ref[None], batch, axis=0), np.arange(batch, dtype=np.int64)
