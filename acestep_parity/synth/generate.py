"""Synthetic checkpoint generator: the upstream on-disk layout with deterministic random weights.

Every tensor is drawn from numpy's PCG64 seeded with ``(preset seed, crc32(key))`` (no torch initialisation), so
the files and their SHA-256 are identical on every run and machine. Weight scales are chosen per role so
activations stay in a realistic range through the 8 turbo steps and the VAE produces audible, unclipped audio.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from acestep_ort.hashing import sha256_file
from acestep_parity.synth import layout
from acestep_parity.synth.lm import LM_DIR, write_lm
from acestep_parity.synth.presets import Preset
from acestep_parity.synth.tokenizer import write_tokenizer

DIT_DIR = "acestep-v15-turbo"
VAE_DIR = "vae"
TEXT_DIR = "Qwen3-Embedding-0.6B"
MANIFEST = "synth_manifest.json"


def dit_config(p: Preset) -> dict:
    """``acestep-v15-turbo/config.json`` with upstream ``AceStepConfig`` field names."""
    d = p.dit
    layers = max(d.num_hidden_layers, d.num_lyric_encoder_hidden_layers, d.num_timbre_encoder_hidden_layers)
    return {
        "architectures": ["AceStepConditionGenerationModel"],
        "auto_map": {
            "AutoConfig": "configuration_acestep_v15.AceStepConfig",
            "AutoModel": "modeling_acestep_v15_turbo.AceStepConditionGenerationModel",
        },
        "model_type": "acestep",
        "model_version": "turbo",
        "is_turbo": True,
        "hidden_size": d.hidden_size,
        "intermediate_size": d.intermediate_size,
        "num_hidden_layers": d.num_hidden_layers,
        "num_audio_decoder_hidden_layers": d.num_hidden_layers,
        "num_attention_heads": d.num_attention_heads,
        "num_key_value_heads": d.num_key_value_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": True,
        "sliding_window": d.sliding_window,
        "layer_types": ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)],
        "num_lyric_encoder_hidden_layers": d.num_lyric_encoder_hidden_layers,
        "num_timbre_encoder_hidden_layers": d.num_timbre_encoder_hidden_layers,
        "num_attention_pooler_hidden_layers": d.num_attention_pooler_hidden_layers,
        "timbre_fix_frame": 750,
        "text_hidden_dim": p.text.hidden_size,
        "timbre_hidden_dim": 64,
        "audio_acoustic_hidden_dim": 64,
        "in_channels": 192,
        "patch_size": 2,
        "pool_window_size": 5,
        "fsq_dim": d.fsq_dim,
        "fsq_input_levels": [8, 8, 8, 5, 5, 5],
        "fsq_input_num_quantizers": 1,
        "vocab_size": 64003,
        "tie_word_embeddings": True,
        "use_cache": True,
        "timestep_mu": -0.4,
        "timestep_sigma": 1.0,
        "data_proportion": 0.5,
        "torch_dtype": "float32",
    }


def text_config(p: Preset, vocab_size: int, endoftext_id: int) -> dict:
    """``Qwen3-Embedding-0.6B/config.json`` (transformers ``Qwen3Config`` field names)."""
    t = p.text
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": t.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": t.num_hidden_layers,
        "tie_word_embeddings": True,
        "bos_token_id": endoftext_id,
        "eos_token_id": endoftext_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def vae_config(p: Preset) -> dict:
    """``vae/config.json`` for diffusers ``AutoencoderOobleck``."""
    v = p.vae
    return {
        "_class_name": "AutoencoderOobleck",
        "audio_channels": 2,
        "channel_multiples": list(v.channel_multiples),
        "decoder_channels": v.decoder_channels,
        "decoder_input_channels": 64,
        "downsampling_ratios": list(v.downsampling_ratios),
        "encoder_hidden_size": v.encoder_hidden_size,
        "sampling_rate": 48000,
    }


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode("utf-8"))]))


def _draw(seed: int, key: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
    values = _rng(seed, key).standard_normal(shape, dtype=np.float32)
    return (values * np.float32(std) + np.float32(mean)).astype(np.float32)


def model_tensor(seed: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """One DiT / text-encoder tensor, scaled by its role (fan-in for projections, ~1 for norms)."""
    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("norm.weight") or key.endswith("layernorm.weight"):
        return _draw(seed, key, shape, 0.1, 1.0)
    if leaf == "bias":
        return _draw(seed, key, shape, 0.02)
    if leaf == "scale_shift_table":
        return _draw(seed, key, shape, 0.3)
    if leaf in ("special_token", "special_tokens", "null_condition_emb"):
        return _draw(seed, key, shape, 0.5)
    if key == "embed_tokens.weight":  # text-encoder token table
        return _draw(seed, key, shape, 0.5)
    if key == "decoder.proj_out.1.weight":  # ConvTranspose [in, out, k]: fan-in is the input channels
        return _draw(seed, key, shape, 1.5 / np.sqrt(shape[0]))
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return _draw(seed, key, shape, 1.0 / np.sqrt(fan_in))


def vae_tensor(seed: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """One VAE tensor: weight_g sets each filter's norm (≈ unit gain), Snake alpha/beta stay near log(1)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "weight_g":
        gain = 0.6 if ".res_unit" in key else 1.0
        return np.abs(_draw(seed, key, shape, 0.1 * gain, gain)).astype(np.float32)
    if leaf == "weight_v":
        return _draw(seed, key, shape, 1.0)
    if leaf in ("alpha", "beta"):
        return _draw(seed, key, shape, 0.2)
    return _draw(seed, key, shape, 0.02)  # biases


def silence_latent(seed: int, frames: int) -> np.ndarray:
    """[1, 64, frames]: per-channel levels plus a slow deterministic wobble, like VAE-encoded silence."""
    rng = _rng(seed, "silence_latent")
    level = rng.standard_normal((1, 64, 1), dtype=np.float32) * np.float32(0.8)
    wobble = rng.standard_normal((1, 64, frames), dtype=np.float32) * np.float32(0.05)
    return (level + wobble).astype(np.float32)


def save_torch_tensor_deterministic(array: np.ndarray, path: Path) -> None:
    """``torch.save`` a float32 tensor, then rewrite the zip with a fixed serialization id.

    torch >= 2.1 stamps every archive with a random ``.data/serialization_id``; replacing it (and keeping the
    64-byte data alignment torch uses) makes the file byte-identical across runs while ``torch.load`` reads it
    exactly as a normal ``torch.save`` file.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(array)), buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    prefix = entries[0][0].split("/", 1)[0]
    target = path.stem
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for name, data in entries:
            name = target + name[len(prefix):]
            if name.endswith(".data/serialization_id"):
                data = b"0" * 40
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            header_len = 30 + len(name.encode("utf-8"))
            pad = (-(out.tell() + header_len + 4)) % 64
            info.extra = b"FB" + pad.to_bytes(2, "little") + b"Z" * pad
            dst.writestr(info, data)
    path.write_bytes(out.getvalue())


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(dict(sorted(tensors.items())), str(path), metadata={"format": "pt"})


def generate(preset: Preset, out: Path) -> dict[str, str]:
    """Write the whole checkpoint folder and return ``{relative path: sha256}`` (also saved as a manifest)."""
    out = Path(out)
    dit_dir, vae_dir, text_dir = out / DIT_DIR, out / VAE_DIR, out / TEXT_DIR
    for d in (dit_dir, vae_dir, text_dir):
        d.mkdir(parents=True, exist_ok=True)
    seed = preset.seed

    write_tokenizer(text_dir, vocab_size=preset.text.bpe_vocab_size)
    tok = json.loads((text_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = [t["id"] for t in tok["added_tokens"]] + list(tok["model"]["vocab"].values())
    endoftext = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
    tcfg = text_config(preset, max(ids) + 1, endoftext)
    _write_json(text_dir / "config.json", tcfg)
    _write_safetensors(
        text_dir / "model.safetensors",
        {k: model_tensor(seed + 1, k, s) for k, s in layout.text_encoder_checkpoint_shapes(tcfg).items()},
    )

    dcfg = dit_config(preset)
    _write_json(dit_dir / "config.json", dcfg)
    _write_safetensors(
        dit_dir / "model.safetensors",
        {k: model_tensor(seed, k, s) for k, s in layout.dit_checkpoint_shapes(dcfg).items()},
    )
    save_torch_tensor_deterministic(silence_latent(seed, preset.silence_frames), dit_dir / "silence_latent.pt")

    vcfg = vae_config(preset)
    _write_json(vae_dir / "config.json", vcfg)
    _write_safetensors(
        vae_dir / "diffusion_pytorch_model.safetensors",
        {k: vae_tensor(seed + 2, k, s) for k, s in layout.vae_checkpoint_shapes(vcfg).items()},
    )

    write_lm(preset.lm, out / LM_DIR, preset.lm.seed if preset.lm.seed is not None else seed + 3)

    hashes = {
        str(p.relative_to(out)): sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    _write_json(out / MANIFEST, {"preset": preset.name, "preset_config": asdict(preset),
                                 "generator": generator_digest(), "files": hashes})
    return hashes


def generator_digest() -> str:
    """SHA-256 of this generator's own sources (the ``synth`` package): a cached checkpoint made by other code
    (e.g. before the LM's norm became CPU-independent) is regenerated, not silently reused."""
    import hashlib

    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()
