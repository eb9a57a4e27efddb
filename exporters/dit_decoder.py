"""``dit_decoder.onnx``: one DiT velocity evaluation, ``(x_t, t, r, enc, ctx) -> v_t``, all of B, T, T_enc dynamic.

The wrapper calls the diffusers ``AceStepTransformer1DModel`` unchanged except for one thing: diffusers pads an
odd T with ``if hidden_states.shape[1] % patch_size != 0: F.pad(...)``. ``torch.export`` turns that Python branch
into a guard on the parity of T (or, with a sliced pad, into an unbacked size it cannot guard on), so the graph
would be specialised to one parity. The wrapper instead zero-pads ``hidden_states`` and ``context_latents`` by
``2*ceil(T/2) - T`` frames *before* the call (pure shape arithmetic, no branch: diffusers concatenates
``[context, hidden]`` and pads the concatenation with zeros, which is the same tensor), so inside the model the
length is provably even and the branch is statically dead; the output is narrowed back to T.

The sinusoidal timestep embedding gets one numerics fix. diffusers' ``get_timestep_embedding`` computes its
frequency table ``exp(-ln(10000) * i / 128)`` on every call; in the graph that subgraph is input-independent, so
the exporter's optimizer constant-folds it -- with numpy's ``exp``, which differs from torch's vectorised
``exp`` by one ulp in 54 of the 128 entries. Multiplied by ``t * 1000`` (arguments up to ~1000 rad) that is a
6e-5 error in sin/cos and ~2.5e-5 in ``vt`` on the tiny model. The wrapper therefore feeds the embedding a
frequency table computed once *by torch with the same ops* (a buffer, bit-identical to what the reference
recomputes per call) through a non-mutating shallow clone of the transformer (parameters shared, the reference
module untouched), so the graph multiplies by exactly the reference's frequencies.

Attention is exported in two forms that scale with the song (issue 18.3), through a processor set on shallow
clones of the attention modules (:class:`ExportAttnProcessor`, the reference modules keep theirs):

* the **full-attention** layers (upstream gives them no mask) become ONNX Runtime's
  ``com.microsoft.MultiHeadAttention``, whose CPU kernel streams the scores (flash attention) instead of
  materialising ``[heads, T/2, T/2]``: memory O(T) and about 0.6x the MatMul-Softmax-MatMul time at 120-600 s;
* the **sliding-window** layers (upstream's dense mask keeps ``|i - j| <= window``) become a blocked band
  (:func:`banded_attention`): query blocks of ``window`` tokens against their own and both neighbouring key
  blocks, with the same band as the mask, so the scores are O(T * 3 * window) instead of O(T^2).

Both are the same maths as upstream's SDPA with its masks (masked scores get ``finfo.min`` and vanish in the
softmax, as upstream's do); the sums run in another order, so the per-graph onnx~torch gates hold them.
Cross-attention (``T/2 x L_enc`` scores, linear in the song) keeps upstream's SDPA call. RoPE is traced as is,
and no KV cache object exists in the graph.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from onnxscript import FLOAT

from acestep_parity.checkpoint import ReferenceModels


def timestep_frequencies(sinusoid: torch.nn.Module, max_period: int = 10000) -> torch.Tensor:
    """The table ``get_timestep_embedding`` builds per call, built once with the very same torch ops."""
    half = sinusoid.num_channels // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32)
    exponent = exponent / (half - sinusoid.downscale_freq_shift)
    return torch.exp(exponent)


class TableSinusoid(torch.nn.Module):
    """diffusers ``Timesteps`` with its frequency table as a buffer: same ops after the table, same order."""

    def __init__(self, original: torch.nn.Module):
        super().__init__()
        if original.num_channels % 2:
            raise ValueError("odd timestep embedding widths are not used by ACE-Step")
        self.num_channels = original.num_channels
        self.flip_sin_to_cos = original.flip_sin_to_cos
        self.scale = original.scale
        self.register_buffer("frequencies", timestep_frequencies(original), persistent=False)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        emb = timesteps[:, None].float() * self.frequencies[None, :]
        emb = self.scale * emb
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if self.flip_sin_to_cos:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        return emb


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with its own submodule table (parameters and buffers stay shared)."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def with_table_sinusoids(transformer: torch.nn.Module) -> torch.nn.Module:
    """The transformer with ``time_embed[_r].time_sinusoid`` replaced by :class:`TableSinusoid`, without
    touching the reference module (shallow clones along the path; no weight is copied)."""
    clone = _shallow(transformer)
    for name in ("time_embed", "time_embed_r"):
        embedding = _shallow(transformer._modules[name])
        embedding._modules["time_sinusoid"] = TableSinusoid(embedding._modules["time_sinusoid"])
        clone._modules[name] = embedding
    return clone


@torch.library.custom_op("acestep_parity::attention", mutates_args=())
def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """Unmasked GQA attention in the processor's ``[B, L, heads, D]`` layout (keys may have fewer heads): SDPA.
    Exported as ``com.microsoft.MultiHeadAttention`` (:func:`attention_onnx`)."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                         scale=scale, enable_gqa=query.shape[2] != key.shape[2])
    return out.transpose(1, 2).contiguous()


@attention.register_fake
def _attention_shape(query, key, value, scale):
    return torch.empty_like(query)


def attention_onnx(query: FLOAT, key: FLOAT, value: FLOAT, scale: float):
    """ONNX translation of :func:`attention`: key/value heads repeated to the query's (GQA: query head h reads key
    head h // group), flattened to ``[B, L, heads*D]``, then ORT's MultiHeadAttention (no mask, no bias)."""
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset

    multi_head_attention = Op(Opset("com.microsoft", 1), "MultiHeadAttention", _mha_schema())
    heads, kv_heads, head_dim = query.shape[2], key.shape[2], query.shape[3]

    def flat(x):
        return op.Reshape(x, op.Constant(value_ints=[0, 0, -1]))

    def repeated(x):
        if kv_heads == heads:
            return flat(x)
        grouped = op.Unsqueeze(x, op.Constant(value_ints=[3]))  # [B, L, KV, 1, D]
        shape = op.Concat(op.Shape(x, start=0, end=3), op.Constant(value_ints=[heads // kv_heads, head_dim]), axis=0)
        return flat(op.Expand(grouped, shape))

    out = multi_head_attention(flat(query), repeated(key), repeated(value), num_heads=heads, scale=scale)
    return op.Reshape(out, op.Constant(value_ints=[0, 0, heads, head_dim]))


def _mha_schema():
    """The part of ORT's ``com.microsoft.MultiHeadAttention`` schema this graph uses (query, key, value; num_heads,
    scale): onnx ships no schemas of ORT's contrib ops, and the exporter's tracer needs one to build the node."""
    import onnx
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    return OpSchema(
        "MultiHeadAttention", "com.microsoft", 1,
        inputs=[param("query", "T"), param("key", "T"), param("value", "T")], outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads"),
                    OpSchema.Attribute("scale", onnx.helper.make_attribute("scale", 0.0), "score scale")])


def banded_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
                     window: int) -> torch.Tensor:
    """Attention restricted to ``|i - j| <= window`` (upstream's sliding mask), ``[B, S, heads, D]`` layout, GQA,
    computed by blocks: query block b (``window`` tokens) meets key blocks b-1, b, b+1, masked to the band and to
    the real keys. Scores ``[B, KV, group, S/window, window, 3*window]``: O(S * window), not O(S^2)."""
    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    block = window
    blocks = (length + block - 1) // block
    pad = blocks * block - length
    q = F.pad(query, (0, 0, 0, 0, 0, pad)).reshape(batch, blocks, block, kv_heads, heads // kv_heads, head_dim)
    q = q.permute(0, 3, 4, 1, 2, 5)  # [B, KV, G, nb, block, D]

    def neighbourhoods(x: torch.Tensor) -> torch.Tensor:  # [B, S, KV, D] -> [B, KV, 1, nb, 3*block, D]
        x = F.pad(x, (0, 0, 0, 0, block, pad + block)).reshape(batch, blocks + 2, block, kv_heads, head_dim)
        x = torch.cat([x[:, :-2], x[:, 1:-1], x[:, 2:]], dim=2)
        return x.permute(0, 3, 1, 2, 4).unsqueeze(2)

    k, v = neighbourhoods(key), neighbourhoods(value)
    rows = torch.arange(blocks * block, device=query.device).reshape(blocks, block, 1)
    cols = torch.arange(3 * block, device=query.device).reshape(1, 1, 3 * block)
    starts = (torch.arange(blocks, device=query.device) * block - block).reshape(blocks, 1, 1)
    positions = starts + cols  # key position of each column, per block
    keep = ((rows - positions).abs() <= window) & (positions >= 0) & (positions < length)
    bias = torch.zeros(keep.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~keep, torch.finfo(query.dtype).min)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, KV, G, nb, block, D]
    out = out.permute(0, 3, 4, 1, 2, 5).reshape(batch, blocks * block, heads, head_dim)
    return out.narrow(1, 0, length)


class ExportAttnProcessor:
    """diffusers ``AceStepAttnProcessor2_0`` on its native path (same projections, q/k norms, RoPE on
    self-attention, output projection), with the attention call in the two scalable forms of the module
    docstring: :func:`banded_attention` for a sliding-window self-attention (its dense mask is that band, so it is
    not read), :func:`attention` for a full self-attention, upstream's SDPA call for cross-attention."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        is_cross = attn.is_cross_attention and encoder_hidden_states is not None
        kv_input = encoder_hidden_states if is_cross else hidden_states
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, attn.head_dim)))
        key = attn.norm_k(attn.to_k(kv_input).unflatten(-1, (attn.kv_heads, attn.head_dim)))
        value = attn.to_v(kv_input).unflatten(-1, (attn.kv_heads, attn.head_dim))
        if not is_cross and image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
        window = None if is_cross else getattr(attn, "sliding_window", None)
        if attention_mask is not None and window is None:
            raise ValueError("an attention call without a sliding window was given a mask: the export would drop it")
        if is_cross:  # O(T * L_enc): upstream's SDPA call as the native backend makes it
            out = F.scaled_dot_product_attention(
                query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=attn.scaling,
                enable_gqa=attn.heads != attn.kv_heads).transpose(1, 2)
        elif window is not None:
            out = banded_attention(query, key, value, attn.scaling, int(window))
        else:
            out = attention(query, key, value, float(attn.scaling))
        out = out.flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def with_export_attention(transformer: torch.nn.Module) -> torch.nn.Module:
    """``transformer`` (already a shallow clone) with shallow clones of its layers and their attention modules,
    each given :class:`ExportAttnProcessor`; parameters shared, the reference modules untouched."""
    layers = torch.nn.ModuleList()
    for layer in transformer.layers:
        clone = _shallow(layer)
        for name in ("self_attn", "cross_attn"):
            if name in clone._modules:
                attn = _shallow(clone._modules[name])
                attn.processor = ExportAttnProcessor()
                clone._modules[name] = attn
        layers.append(clone)
    transformer._modules["layers"] = layers
    return transformer


# torch.onnx.export's custom_translation_table for this graph (exporters/export.py: trace_graph)
TRANSLATIONS = {torch.ops.acestep_parity.attention.default: attention_onnx}


class DitDecoderGraph(torch.nn.Module):
    """``hidden_states [B,T,64], timestep [B], timestep_r [B], encoder_hidden_states [B,T_enc,H],
    context_latents [B,T,128] -> vt [B,T,64]``."""

    def __init__(self, transformer: torch.nn.Module, scalable_attention: bool = True):
        super().__init__()
        clone = with_table_sinusoids(transformer)
        self.transformer = with_export_attention(clone) if scalable_attention else clone
        self.patch_size = int(transformer.patch_size)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[1]
        patches = (length + self.patch_size - 1) // self.patch_size
        pad = patches * self.patch_size - length
        hidden = F.pad(hidden_states, (0, 0, 0, pad))
        context = F.pad(context_latents, (0, 0, 0, pad))
        out = self.transformer(hidden_states=hidden, timestep=timestep, timestep_r=timestep_r,
                               encoder_hidden_states=encoder_hidden_states, context_latents=context,
                               return_dict=False)[0]
        # narrow (not out[:, :length]) keeps the output axis equal to T instead of an unbacked min(T, 2*ceil(T/2))
        return out.narrow(1, 0, length)


def build(models: ReferenceModels) -> torch.nn.Module:
    require_native_attention(models.transformer.layers)
    return DitDecoderGraph(models.transformer).eval()


def require_native_attention(layers: torch.nn.ModuleList) -> None:
    """Refuse a flash attention backend: it skips the dense sliding-window mask the graph must contain."""
    from diffusers.models.transformers.ace_step_transformer import _is_flash_attention_backend

    if any(_is_flash_attention_backend(layer.self_attn.processor) for layer in layers):
        raise ValueError("a flash attention backend is active; export needs the native SDPA path (dense masks)")


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The diffusers module, called as ``acestep_parity.torch_ref.TorchEngine.dit`` (which passes r = t)."""
    out = models.transformer(
        hidden_states=torch.from_numpy(inputs["hidden_states"]), timestep=torch.from_numpy(inputs["timestep"]),
        timestep_r=torch.from_numpy(inputs["timestep_r"]),
        encoder_hidden_states=torch.from_numpy(inputs["encoder_hidden_states"]),
        context_latents=torch.from_numpy(inputs["context_latents"]), return_dict=False,
    )[0]
    return {"vt": out.float().numpy()}
