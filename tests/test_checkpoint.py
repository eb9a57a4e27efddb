"""Synthetic checkpoint determinism and the strict loader's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402

from acestep_parity.checkpoint import CheckpointError, load_reference_models, map_upstream_key  # noqa: E402
from acestep_parity.synth.generate import MANIFEST, generate  # noqa: E402
from acestep_parity.synth.presets import TINY  # noqa: E402


def test_synth_is_byte_identical(tmp_path, checkpoint_dir, record_property):
    hashes = generate(TINY, tmp_path / "again")
    cached = json.loads((checkpoint_dir / MANIFEST).read_text())["files"]
    record_property("files", len(hashes))
    assert hashes == cached, "two generations of the tiny preset differ"
    assert {"acestep-v15-turbo/model.safetensors", "acestep-v15-turbo/silence_latent.pt",
            "vae/diffusion_pytorch_model.safetensors", "Qwen3-Embedding-0.6B/model.safetensors",
            "Qwen3-Embedding-0.6B/tokenizer.json"} <= set(hashes)


def test_silence_latent_contract(checkpoint_dir):
    import torch

    silence = torch.load(checkpoint_dir / "acestep-v15-turbo" / "silence_latent.pt", weights_only=True)
    assert silence.dtype == torch.float32 and tuple(silence.shape) == (1, 64, 15000)


def test_tiny_preset_exercises_real_features(checkpoint_dir):
    cfg = json.loads((checkpoint_dir / "acestep-v15-turbo" / "config.json").read_text())
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    assert {"sliding_attention", "full_attention"} <= set(cfg["layer_types"][: cfg["num_hidden_layers"]])
    assert cfg["sliding_window"] * 2 < 128 // 2  # window shorter than the shortest patched sequence
    assert (cfg["in_channels"], cfg["audio_acoustic_hidden_dim"], cfg["timbre_hidden_dim"]) == (192, 64, 64)
    vae = json.loads((checkpoint_dir / "vae" / "config.json").read_text())
    assert vae["downsampling_ratios"] == [2, 4, 4, 6, 10] and vae["sampling_rate"] == 48000
    tensors = load_file(str(checkpoint_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    assert "decoder.block.0.conv_t1.weight_g" in tensors and "decoder.conv2.weight_v" in tensors
    dit = load_file(str(checkpoint_dir / "acestep-v15-turbo" / "model.safetensors"))
    table = dit["decoder.layers.0.scale_shift_table"]
    assert float(np.std(table)) > 0.1  # AdaLN tables carry non-trivial values


def test_key_mapping():
    assert map_upstream_key("decoder.layers.3.self_attn.o_proj.weight") == (
        "transformer", "layers.3.self_attn.to_out.0.weight")
    assert map_upstream_key("decoder.proj_in.1.bias") == ("transformer", "proj_in_conv.bias")
    assert map_upstream_key("encoder.lyric_encoder.layers.0.self_attn.q_norm.weight") == (
        "condition_encoder", "lyric_encoder.layers.0.self_attn.norm_q.weight")
    assert map_upstream_key("null_condition_emb") == ("condition_encoder", "null_condition_emb")


def _copy(checkpoint_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir, target)
    return target


def _rewrite_dit(ckpt: Path, edit) -> Path:
    path = ckpt / "acestep-v15-turbo" / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    return path


def test_loader_rejects_renamed_key(checkpoint_dir, tmp_path):
    ckpt = _copy(checkpoint_dir, tmp_path)
    path = _rewrite_dit(ckpt, lambda t: t.__setitem__("decoder.norm_outt.weight", t.pop("decoder.norm_out.weight")))
    with pytest.raises(CheckpointError) as err:
        load_reference_models(ckpt)
    message = str(err.value)
    assert "norm_outt.weight" in message and "norm_out.weight" in message and str(path) in message


def test_loader_rejects_misshaped_tensor(checkpoint_dir, tmp_path):
    ckpt = _copy(checkpoint_dir, tmp_path)
    key = "decoder.layers.1.cross_attn.k_proj.weight"
    path = _rewrite_dit(ckpt, lambda t: t.__setitem__(key, np.zeros((3, 3), dtype=np.float32)))
    with pytest.raises(CheckpointError) as err:
        load_reference_models(ckpt)
    message = str(err.value)
    assert "layers.1.cross_attn.to_k.weight" in message and "(3, 3)" in message and str(path) in message


def test_loader_rejects_config_contradicting_weights(checkpoint_dir, tmp_path):
    ckpt = _copy(checkpoint_dir, tmp_path)
    cfg_path = ckpt / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["decoder_channels"] = 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json"):
        load_reference_models(ckpt)


def test_loader_rejects_missing_file(checkpoint_dir, tmp_path):
    ckpt = _copy(checkpoint_dir, tmp_path)
    (ckpt / "acestep-v15-turbo" / "silence_latent.pt").unlink()
    with pytest.raises(CheckpointError, match="silence_latent.pt"):
        load_reference_models(ckpt)


def test_loader_holds_the_file_tensors_only(checkpoint_dir):
    """The modules are built empty (parameters on the meta device) and each parameter is the tensor read from
    the file: nothing is left on the meta device, every weight equals the file's, the non-persistent RoPE
    buffers are computed, and the LM's tied head shares the embedding again (one copy of the weights)."""
    import torch
    from safetensors.numpy import load_file as load_np

    models = load_reference_models(checkpoint_dir)
    modules = {"transformer": models.transformer, "condition_encoder": models.condition_encoder,
               "vae": models.vae, "text_encoder": models.text_encoder, "lm": models.lm}
    for name, module in modules.items():
        meta = [k for k, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
        assert not meta, f"{name}: {meta[:3]} still on the meta device"
        assert all(p.dtype == torch.float32 for p in module.parameters()), name
    vae_file = load_np(str(checkpoint_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    state = models.vae.state_dict()
    assert all(np.array_equal(state[k].numpy(), v) for k, v in vae_file.items())
    rope = [b for n, b in models.text_encoder.named_buffers() if n.endswith("inv_freq")]
    assert rope and all(torch.isfinite(b).all() and b.abs().sum() > 0 for b in rope)
    if models.lm_config and models.lm_config.get("tie_word_embeddings"):
        assert models.lm.lm_head.weight.data_ptr() == models.lm.model.embed_tokens.weight.data_ptr()
