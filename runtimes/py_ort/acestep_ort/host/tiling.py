"""Tiled VAE decoding plan (upstream ``tiled_decode`` / ``_tiled_decode_inner`` at commit 82252c2).

On CPU upstream decodes with ``chunk_size=256`` and ``overlap=64`` latent frames: the overlap is halved while
``chunk - 2*overlap <= 0`` (floor 4), a latent no longer than the chunk is decoded in one call, otherwise
``stride = chunk - 2*overlap`` and window i covers ``[core-overlap, core_end+overlap)`` clipped to the latent;
the decoded window is trimmed by the added frames times the upsampling factor. Batch items decode one by one.

On ONNX Runtime that tiling only costs time: the 64-frame overlap covers the decoder's receptive field and ORT
computes each output sample the same way whatever the window length, so any chunk size with the same overlap
decodes the same audio bit for bit (``tests/test_vae_chunking.py`` checks it on every case). The runtimes
therefore choose the chunk from a memory budget (:class:`VaeChunking`, mode ``budget``): the largest chunk whose
decode fits ``memory_mb``, overlap kept, one call when the latent fits. Mode ``upstream`` keeps chunk 256.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

CPU_CHUNK_SIZE = 256
OVERLAP = 64
MIN_OVERLAP = 4
# Budget chunks step at least this many frames (a chunk of at least 2 * overlap + MIN_STRIDE), whatever the budget.
MIN_STRIDE = 64
# Largest latent the exported vae_decoder.onnx accepts (exporters/specs.py: VAE_DECODER.axis_limits["T"]).
VAE_MAX_FRAMES = 8192
DEFAULT_VAE_MEMORY_MB = 4096
# Live float32 tensors of the widest activation size during one ORT decode call (Snake's temporaries, the
# residual input and output), measured as peak-RSS growth per latent frame ÷ (4 bytes × widest activation), no
# CPU arena: 3.0 on the tiny decoder, 3.8 on the real one (4097 MB over 1092 frames; docs/performance.md). Rounded
# up so a budget is an upper bound, not a guess that may be exceeded.
ACTIVATION_COPIES = 5
ENV_MEMORY = "ACESTEP_VAE_MEMORY_MB"
ENV_TILING = "ACESTEP_VAE_TILING"


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


@dataclass(frozen=True)
class VaeShape:
    """The Oobleck decoder's widths (``vae/config.json``), enough to size its activations per latent frame."""

    decoder_channels: int = 128
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 6, 10)

    @classmethod
    def from_config(cls, config: Mapping) -> VaeShape:
        return cls(int(config["decoder_channels"]), tuple(int(m) for m in config["channel_multiples"]),
                   tuple(int(r) for r in config["downsampling_ratios"]))

    def activation_widths(self) -> list[int]:
        """Floats per latent frame after each decoder stage: conv1 at C*m[-1], then each upsampling block
        (strides = reversed downsampling ratios) at C*m[-2-i] channels (diffusers ``OobleckDecoder``)."""
        mults = [1, *self.channel_multiples]
        widths = [self.decoder_channels * mults[-1]]
        rate = 1
        for i, stride in enumerate(reversed(self.downsampling_ratios)):
            rate *= stride
            widths.append(self.decoder_channels * mults[len(self.downsampling_ratios) - i - 1] * rate)
        return widths

    def frame_bytes(self) -> int:
        """Peak bytes one latent frame costs inside one decode call (the budget's unit)."""
        return ACTIVATION_COPIES * 4 * max(self.activation_widths())


def budget_chunk(memory_mb: int, frame_bytes: int, max_frames: int = VAE_MAX_FRAMES, overlap: int = OVERLAP) -> int:
    """The largest chunk (latent frames) whose decode fits ``memory_mb``, at least ``2*overlap + MIN_STRIDE`` and at
    most ``max_frames`` (the graph's limit)."""
    if memory_mb <= 0 or frame_bytes <= 0:
        raise ValueError(f"memory_mb and frame_bytes must be positive, got {memory_mb}, {frame_bytes}")
    floor = 2 * overlap + MIN_STRIDE
    if max_frames < floor:
        raise ValueError(f"max_frames {max_frames} is below the smallest chunk {floor} (overlap {overlap})")
    return min(max_frames, max(floor, memory_mb * (1 << 20) // frame_bytes))


@dataclass(frozen=True)
class VaeChunking:
    """How a runtime cuts the latent for the VAE: ``upstream`` (chunk 256, overlap 64) or ``budget``."""

    mode: str = "budget"
    memory_mb: int = DEFAULT_VAE_MEMORY_MB

    def __post_init__(self):
        if self.mode not in ("budget", "upstream"):
            raise ValueError(f"VAE tiling mode must be budget or upstream, got {self.mode}")
        if self.memory_mb <= 0:
            raise ValueError(f"VAE memory budget must be positive, got {self.memory_mb} MB")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> VaeChunking:
        """``ACESTEP_VAE_TILING`` (budget | upstream) and ``ACESTEP_VAE_MEMORY_MB``; the defaults otherwise."""
        return cls.parse(env.get(ENV_TILING), env.get(ENV_MEMORY))

    @classmethod
    def parse(cls, tiling: str | None, memory_mb: str | None) -> VaeChunking:
        """From the two settings as text (``None`` or blank = the default); the Rust runtime's messages."""
        memory = (memory_mb or "").strip()
        if memory and not (memory.isascii() and memory.isdigit()):
            raise ValueError(f"{ENV_MEMORY}={memory} is not a whole number of MB")
        return cls((tiling or "").strip() or "budget", int(memory) if memory else DEFAULT_VAE_MEMORY_MB)

    def chunk_size(self, vae: VaeShape, max_frames: int = VAE_MAX_FRAMES) -> int:
        if self.mode == "upstream":
            return CPU_CHUNK_SIZE
        return budget_chunk(self.memory_mb, vae.frame_bytes(), max_frames)


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
