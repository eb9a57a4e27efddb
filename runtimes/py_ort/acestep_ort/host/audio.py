"""Audio post-processing and file writing (upstream decode tail and ``AudioSaver``).

After decode upstream casts to float32, applies anti-clipping (``wav /= max(peak, 1)`` per item, only when the
peak exceeds 1) and ``inference.generate_music`` peak-normalizes to -1 dBFS (skipped when the peak < 1e-6).
Files are 48 kHz stereo; wav is float32, flac 16-bit, mp3 128 kbit/s through LAME.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NORMALIZATION_DB = -1.0
SUPPORTED_FORMATS = ("wav", "flac", "mp3")


class NonFiniteAudioError(ValueError):
    """The decoder returned NaN or infinite samples: a damaged VAE graph or a numerical failure, never music."""


def non_finite_count(audio: np.ndarray) -> int:
    return int(audio.size - np.count_nonzero(np.isfinite(audio)))


def check_finite(audio: np.ndarray, source: str) -> np.ndarray:
    """``audio`` unchanged, or :class:`NonFiniteAudioError` naming ``source``: no runtime writes non-finite audio
    (anti-clipping and peak normalisation would spread one NaN over the whole item)."""
    bad = non_finite_count(audio)
    if bad:
        raise NonFiniteAudioError(f"{source} returned {bad} non-finite samples of {audio.size} (NaN or infinity): "
                                  "the graph is damaged or the decode failed; no audio written")
    return audio


def anti_clip(audio: np.ndarray) -> np.ndarray:
    """Per item ``wav / max(peak, 1)`` when ``peak = max|wav| > 1``; [B, C, S] float32 in and out."""
    out = audio.astype(np.float32, copy=True)
    for b in range(out.shape[0]):
        peak = float(np.max(np.abs(out[b])))
        if peak > 1.0:
            out[b] = out[b] / np.float32(peak)
    return out


def normalize_peak(audio: np.ndarray, target_db: float = NORMALIZATION_DB) -> np.ndarray:
    """Per item gain ``10**(target_db/20) / peak``; items with peak < 1e-6 are left as they are."""
    out = audio.astype(np.float32, copy=True)
    target = 10 ** (target_db / 20)
    for b in range(out.shape[0]):
        peak = float(np.max(np.abs(out[b])))
        if peak >= 1e-6:
            out[b] = out[b] * np.float32(target / peak)
    return out


def save_audio(path: Path, audio: np.ndarray, sample_rate: int = 48000) -> Path:
    """Write one item [C, S] as wav (float32), flac (16-bit) or mp3 (LAME 128k), chosen by the file extension."""
    import soundfile as sf

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"unsupported audio format {path.suffix!r} for {path}; use one of {SUPPORTED_FORMATS}")
    if audio.ndim != 2:
        raise ValueError(f"expected [channels, samples] audio, got shape {audio.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(audio.T.astype(np.float32))
    if fmt == "wav":
        sf.write(path, frames, sample_rate, subtype="FLOAT", format="WAV")
    elif fmt == "flac":
        sf.write(path, frames, sample_rate, subtype="PCM_16", format="FLAC")
    else:
        try:
            import lameenc
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("mp3 output needs the 'lameenc' package (pip install lameenc)") from exc
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).round().astype(np.int16)
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(128)
        encoder.set_in_sample_rate(sample_rate)
        encoder.set_channels(pcm.shape[1])
        encoder.set_quality(2)
        path.write_bytes(encoder.encode(pcm.tobytes()) + encoder.flush())
    return path
