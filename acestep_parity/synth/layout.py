"""Upstream state-dict keys and shapes, enumerated from the config the way upstream's modules define them.

Written from the upstream module structure (spec: ``AceStepConditionGenerationModel`` with ``decoder.``,
``encoder.``, ``tokenizer.``, ``detokenizer.`` prefixes and ``null_condition_emb``; Qwen3Model keys; Oobleck VAE
with legacy weight_norm ``weight_g``/``weight_v``) and *not* from the library modules the loader maps them onto,
so the strict loader is a real cross-check of the key mapping.
"""

from __future__ import annotations

import math

Shape = tuple[int, ...]


def _attention(prefix: str, hidden: int, heads: int, kv_heads: int, head_dim: int) -> dict[str, Shape]:
    return {
        f"{prefix}.q_proj.weight": (heads * head_dim, hidden),
        f"{prefix}.k_proj.weight": (kv_heads * head_dim, hidden),
        f"{prefix}.v_proj.weight": (kv_heads * head_dim, hidden),
        f"{prefix}.o_proj.weight": (hidden, heads * head_dim),
        f"{prefix}.q_norm.weight": (head_dim,),
        f"{prefix}.k_norm.weight": (head_dim,),
    }


def _mlp(prefix: str, hidden: int, inter: int) -> dict[str, Shape]:
    return {
        f"{prefix}.gate_proj.weight": (inter, hidden),
        f"{prefix}.up_proj.weight": (inter, hidden),
        f"{prefix}.down_proj.weight": (hidden, inter),
    }


def _encoder_layers(prefix: str, n: int, cfg: dict) -> dict[str, Shape]:
    h, out = cfg["hidden_size"], {}
    for i in range(n):
        p = f"{prefix}.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = (h,)
        out[f"{p}.post_attention_layernorm.weight"] = (h,)
        out.update(_attention(f"{p}.self_attn", h, cfg["num_attention_heads"], cfg["num_key_value_heads"],
                              cfg["head_dim"]))
        out.update(_mlp(f"{p}.mlp", h, cfg["intermediate_size"]))
    return out


def dit_checkpoint_shapes(cfg: dict) -> dict[str, Shape]:
    """Keys of ``acestep-v15-turbo/model.safetensors`` for an ``AceStepConfig`` dict."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    patch, acoustic = cfg["patch_size"], cfg["audio_acoustic_hidden_dim"]
    out: dict[str, Shape] = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"decoder.layers.{i}"
        out[f"{p}.self_attn_norm.weight"] = (h,)
        out.update(_attention(f"{p}.self_attn", h, heads, kv, hd))
        out[f"{p}.cross_attn_norm.weight"] = (h,)
        out.update(_attention(f"{p}.cross_attn", h, heads, kv, hd))
        out[f"{p}.mlp_norm.weight"] = (h,)
        out.update(_mlp(f"{p}.mlp", h, inter))
        out[f"{p}.scale_shift_table"] = (1, 6, h)
    out["decoder.proj_in.1.weight"] = (h, cfg["in_channels"], patch)
    out["decoder.proj_in.1.bias"] = (h,)
    for name in ("time_embed", "time_embed_r"):
        out[f"decoder.{name}.linear_1.weight"] = (h, 256)
        out[f"decoder.{name}.linear_1.bias"] = (h,)
        out[f"decoder.{name}.linear_2.weight"] = (h, h)
        out[f"decoder.{name}.linear_2.bias"] = (h,)
        out[f"decoder.{name}.time_proj.weight"] = (6 * h, h)
        out[f"decoder.{name}.time_proj.bias"] = (6 * h,)
    out["decoder.condition_embedder.weight"] = (h, h)
    out["decoder.condition_embedder.bias"] = (h,)
    out["decoder.norm_out.weight"] = (h,)
    out["decoder.proj_out.1.weight"] = (h, acoustic, patch)
    out["decoder.proj_out.1.bias"] = (acoustic,)
    out["decoder.scale_shift_table"] = (1, 2, h)

    out["encoder.text_projector.weight"] = (h, cfg["text_hidden_dim"])
    out["encoder.lyric_encoder.embed_tokens.weight"] = (h, cfg["text_hidden_dim"])
    out["encoder.lyric_encoder.embed_tokens.bias"] = (h,)
    out["encoder.lyric_encoder.norm.weight"] = (h,)
    out.update(_encoder_layers("encoder.lyric_encoder", cfg["num_lyric_encoder_hidden_layers"], cfg))
    out["encoder.timbre_encoder.embed_tokens.weight"] = (h, cfg["timbre_hidden_dim"])
    out["encoder.timbre_encoder.embed_tokens.bias"] = (h,)
    out["encoder.timbre_encoder.norm.weight"] = (h,)
    out["encoder.timbre_encoder.special_token"] = (1, 1, h)
    out.update(_encoder_layers("encoder.timbre_encoder", cfg["num_timbre_encoder_hidden_layers"], cfg))

    pooler_layers = cfg["num_attention_pooler_hidden_layers"]
    out["tokenizer.audio_acoustic_proj.weight"] = (h, acoustic)
    out["tokenizer.audio_acoustic_proj.bias"] = (h,)
    out["tokenizer.attention_pooler.embed_tokens.weight"] = (h, h)
    out["tokenizer.attention_pooler.embed_tokens.bias"] = (h,)
    out["tokenizer.attention_pooler.norm.weight"] = (h,)
    out["tokenizer.attention_pooler.special_token"] = (1, 1, h)
    out.update(_encoder_layers("tokenizer.attention_pooler", pooler_layers, cfg))
    n_levels = len(cfg["fsq_input_levels"])
    out["tokenizer.quantizer.project_in.weight"] = (n_levels, cfg["fsq_dim"])
    out["tokenizer.quantizer.project_in.bias"] = (n_levels,)
    out["tokenizer.quantizer.project_out.weight"] = (cfg["fsq_dim"], n_levels)
    out["tokenizer.quantizer.project_out.bias"] = (cfg["fsq_dim"],)

    out["detokenizer.embed_tokens.weight"] = (h, h)
    out["detokenizer.embed_tokens.bias"] = (h,)
    out["detokenizer.norm.weight"] = (h,)
    out["detokenizer.special_tokens"] = (1, cfg["pool_window_size"], h)
    out.update(_encoder_layers("detokenizer", pooler_layers, cfg))
    out["detokenizer.proj_out.weight"] = (acoustic, h)
    out["detokenizer.proj_out.bias"] = (acoustic,)
    out["null_condition_emb"] = (1, 1, h)
    return out


def text_encoder_checkpoint_shapes(cfg: dict) -> dict[str, Shape]:
    """Keys of ``Qwen3-Embedding-0.6B/model.safetensors`` (a ``Qwen3Model`` saved without the ``model.`` prefix)."""
    h = cfg["hidden_size"]
    out: dict[str, Shape] = {"embed_tokens.weight": (cfg["vocab_size"], h), "norm.weight": (h,)}
    out.update(_encoder_layers("", cfg["num_hidden_layers"], cfg))
    return {k.lstrip("."): v for k, v in out.items()}


def vae_checkpoint_shapes(cfg: dict) -> dict[str, Shape]:
    """Keys of ``vae/diffusion_pytorch_model.safetensors``: Oobleck encoder + decoder with legacy weight_norm."""
    out: dict[str, Shape] = {}

    def wn_conv(prefix: str, c_out: int, c_in: int, k: int, bias: bool = True, transpose: bool = False) -> None:
        # weight_norm(dim=0): the norm is over every dim but 0, so g is per output channel for Conv1d and per
        # *input* channel for ConvTranspose1d (whose weight is [in, out, k]).
        if transpose:
            out[f"{prefix}.weight_g"] = (c_in, 1, 1)
            out[f"{prefix}.weight_v"] = (c_in, c_out, k)
        else:
            out[f"{prefix}.weight_g"] = (c_out, 1, 1)
            out[f"{prefix}.weight_v"] = (c_out, c_in, k)
        if bias:
            out[f"{prefix}.bias"] = (c_out,)

    def snake(prefix: str, c: int) -> None:
        out[f"{prefix}.alpha"] = (1, c, 1)
        out[f"{prefix}.beta"] = (1, c, 1)

    def res_unit(prefix: str, c: int) -> None:
        snake(f"{prefix}.snake1", c)
        wn_conv(f"{prefix}.conv1", c, c, 7)
        snake(f"{prefix}.snake2", c)
        wn_conv(f"{prefix}.conv2", c, c, 1)

    ratios = list(cfg["downsampling_ratios"])
    mult = [1] + list(cfg["channel_multiples"])
    eh, dc = cfg["encoder_hidden_size"], cfg["decoder_channels"]
    # encoder
    wn_conv("encoder.conv1", eh, cfg["audio_channels"], 7)
    for i, stride in enumerate(ratios):
        c_in, c_out = eh * mult[i], eh * mult[i + 1]
        for j in (1, 2, 3):
            res_unit(f"encoder.block.{i}.res_unit{j}", c_in)
        snake(f"encoder.block.{i}.snake1", c_in)
        wn_conv(f"encoder.block.{i}.conv1", c_out, c_in, 2 * stride)
    snake("encoder.snake1", eh * mult[-1])
    wn_conv("encoder.conv2", eh, eh * mult[-1], 3)
    # decoder
    up = ratios[::-1]
    wn_conv("decoder.conv1", dc * mult[-1], cfg["decoder_input_channels"], 7)
    for i, stride in enumerate(up):
        c_in, c_out = dc * mult[len(up) - i], dc * mult[len(up) - i - 1]
        snake(f"decoder.block.{i}.snake1", c_in)
        wn_conv(f"decoder.block.{i}.conv_t1", c_out, c_in, 2 * stride, transpose=True)
        for j in (1, 2, 3):
            res_unit(f"decoder.block.{i}.res_unit{j}", c_out)
    snake("decoder.snake1", dc)
    wn_conv("decoder.conv2", cfg["audio_channels"], dc, 7, bias=False)
    return out


def hop_length(cfg: dict) -> int:
    return int(math.prod(cfg["downsampling_ratios"]))
