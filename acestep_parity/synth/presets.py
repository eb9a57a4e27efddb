"""Synthetic checkpoint presets: the upstream config fields, at tiny or real sizes.

The tiny preset keeps the real latent contract (64 latent channels, in_channels 192, silence latent
[1, 64, 15000], hop 1920 at 48 kHz, VAE strides [2, 4, 4, 6, 10]) and shrinks widths and depths while keeping
every feature the real model exercises: GQA (heads 4 / kv 2), alternating sliding/full layers with a window
(16 patched frames) shorter than any patched sequence (>= 64), RoPE, q/k RMSNorm and AdaLN tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class DitPreset:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    sliding_window: int
    num_lyric_encoder_hidden_layers: int
    num_timbre_encoder_hidden_layers: int
    num_attention_pooler_hidden_layers: int
    fsq_dim: int


@dataclass(frozen=True)
class TextEncoderPreset:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    bpe_vocab_size: int


@dataclass(frozen=True)
class VaePreset:
    encoder_hidden_size: int
    decoder_channels: int
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 6, 10)


@dataclass(frozen=True)
class LmPreset:
    """The 5 Hz LM planner (``acestep-5Hz-lm-0.6B``, a Qwen3ForCausalLM).

    ``audio_codes`` tokens ``<|audio_code_0..audio_codes-1|>`` are written (the real LM has 65,535; values
    64000..65534 are out of upstream's valid range and plain text to its FSM); a smaller set also gets 64000 and
    65534 so the out-of-range rule is exercised. ``peak`` scales the designed next-token direction of the
    untied ``lm_head`` and ``spread`` its random part (see :mod:`acestep_parity.synth.lm`).
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    bpe_vocab_size: int
    audio_codes: int
    peak: float = 6.0
    spread: float = 4.0
    seed: int | None = None  # PCG64 seed of the LM tensors; None = the checkpoint preset's seed + 3


# seed 1: of the LM seeds 1..12 tried (and the default), one that gives the five simple_mode cases five distinct
# plans with every stream ending in ~60 tokens and the smallest top-1/top-2 margin 0.062 (the default's: 4 distinct
# plans, margin 0.050). The seed is arbitrary; the selection is recorded here so nothing is hidden.
TINY_LM = LmPreset(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, bpe_vocab_size=1024, audio_codes=64, seed=1)
# Qwen3-0.6B widths and the real 65,535 audio-code tokens (the BPE part stays small: random weights anyway).
FULL_LM = LmPreset(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                   num_key_value_heads=8, head_dim=128, bpe_vocab_size=4096, audio_codes=65535)


@dataclass(frozen=True)
class Preset:
    name: str
    dit: DitPreset
    text: TextEncoderPreset
    vae: VaePreset
    lm: LmPreset = TINY_LM
    seed: int = 20260401
    silence_frames: int = 15000
    extra: dict = field(default_factory=dict)


TINY = Preset(
    name="tiny",
    dit=DitPreset(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, sliding_window=16, num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
        num_attention_pooler_hidden_layers=2, fsq_dim=64,
    ),
    text=TextEncoderPreset(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, bpe_vocab_size=512,
    ),
    vae=VaePreset(encoder_hidden_size=8, decoder_channels=8),
)

FULL = Preset(
    name="full",
    dit=DitPreset(
        hidden_size=2048, intermediate_size=6144, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, sliding_window=128, num_lyric_encoder_hidden_layers=8,
        num_timbre_encoder_hidden_layers=4, num_attention_pooler_hidden_layers=2, fsq_dim=2048,
    ),
    text=TextEncoderPreset(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, bpe_vocab_size=4096,
    ),
    vae=VaePreset(encoder_hidden_size=128, decoder_channels=128),
    lm=FULL_LM,
)

# Real widths and heads of every stack (upstream's configs, as FULL), two layers each (the DiT's two: one sliding-
# window, one full-attention layer; one layer in each condition-encoder stack): real-size speed per layer in a
# checkpoint that builds and exports in minutes on 2 cores (benchmarks: tests/test_benchmarks.py). The LM keeps
# Qwen3-0.6B widths with two layers and a small audio-code vocabulary (its speed is the LM benchmark's concern).
WIDE = Preset(
    name="wide",
    dit=DitPreset(
        hidden_size=2048, intermediate_size=6144, num_hidden_layers=2, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, sliding_window=128, num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1, num_attention_pooler_hidden_layers=1, fsq_dim=2048,
    ),
    text=TextEncoderPreset(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, bpe_vocab_size=4096,
    ),
    vae=VaePreset(encoder_hidden_size=128, decoder_channels=128),
    lm=LmPreset(hidden_size=1024, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, bpe_vocab_size=1024, audio_codes=64, seed=1),
)

# The depth study (docs/realsize.md): FULL with its DiT cut to 2 or 8 layers, every other stack at full size, and
# the tiny LM (the study is text2music). Tensors are drawn per key, so these share the text encoder, the
# condition encoder, the VAE and their first DiT layers with FULL byte for byte: only the DiT's depth differs.
FULL_DIT2 = replace(FULL, name="full-dit2", dit=replace(FULL.dit, num_hidden_layers=2), lm=TINY_LM)
FULL_DIT8 = replace(FULL, name="full-dit8", dit=replace(FULL.dit, num_hidden_layers=8), lm=TINY_LM)

PRESETS = {p.name: p for p in (TINY, WIDE, FULL, FULL_DIT2, FULL_DIT8)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
