"""Tiled VAE decoding plan (upstream ``tiled_decode`` / ``_tiled_decode_inner`` at commit 82252c2).

On CPU upstream decodes with ``chunk_size=256`` and ``overlap=64`` latent frames: the overlap is halved while
``chunk - 2*overlap <= 0`` (floor 4), a latent no longer than the chunk is decoded in one call, otherwise
``stride = chunk - 2*overlap`` and window i covers ``[core-overlap, core_end+overlap)`` clipped to the latent;
the decoded window is trimmed by the added frames times the upsampling factor. Batch items decode one by one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CPU_CHUNK_SIZE = 256
OVERLAP = 64
MIN_OVERLAP = 4


@dataclass(frozen=True)
class Tile:
    """One decode window and the part of it that is kept."""

    win_start: int
    win_end: int
    core_start: int
    core_end: int


def effective_overlap(chunk_size: int, overlap: int) -> int:
    eff = overlap
    while chunk_size - 2 * eff <= 0 and eff > MIN_OVERLAP:
        eff //= 2
    if eff < MIN_OVERLAP and overlap >= MIN_OVERLAP:
        eff = MIN_OVERLAP
    return eff


def plan_tiles(latent_frames: int, chunk_size: int = CPU_CHUNK_SIZE, overlap: int = OVERLAP) -> list[Tile]:
    """The windows upstream decodes for a latent of ``latent_frames`` frames."""
    if latent_frames <= 0:
        raise ValueError(f"latent_frames must be positive, got {latent_frames}")
    overlap = effective_overlap(chunk_size, overlap)
    if latent_frames <= chunk_size:
        return [Tile(0, latent_frames, 0, latent_frames)]
    stride = chunk_size - 2 * overlap
    if stride <= 0:
        raise ValueError(f"chunk_size {chunk_size} must be > 2 * overlap {overlap}")
    tiles = []
    for i in range(math.ceil(latent_frames / stride)):
        core_start = i * stride
        core_end = min(core_start + stride, latent_frames)
        tiles.append(Tile(max(0, core_start - overlap), min(latent_frames, core_end + overlap), core_start, core_end))
    return tiles


def tiled_decode(
    latents: np.ndarray,
    decode: Callable[[np.ndarray], np.ndarray],
    chunk_size: int = CPU_CHUNK_SIZE,
    overlap: int = OVERLAP,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Decode [B, C, T] latents with ``decode([1, C, t]) -> [1, channels, t*hop]``, item by item, tile by tile."""
    outputs = []
    for b in range(latents.shape[0]):
        item = latents[b : b + 1]
        tiles = plan_tiles(item.shape[-1], chunk_size, overlap)
        pieces = []
        for k, tile in enumerate(tiles):
            window = np.ascontiguousarray(item[:, :, tile.win_start : tile.win_end])
            audio = decode(window)
            factor = audio.shape[-1] / window.shape[-1]
            trim_start = int(round((tile.core_start - tile.win_start) * factor))
            trim_end = int(round((tile.win_end - tile.core_end) * factor))
            end = audio.shape[-1] - trim_end if trim_end > 0 else audio.shape[-1]
            pieces.append(audio[:, :, trim_start:end])
            if on_tile is not None:
                on_tile(k + 1, len(tiles))
        outputs.append(np.concatenate(pieces, axis=-1))
    return np.concatenate(outputs, axis=0)
