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

Everything else is traced as is: RoPE and the sliding-window band ``|i - j| <= window`` are built from the
dynamic patched length with Range/Abs/LessOrEqual, attention is the native SDPA path (no flash backend, no
masks: upstream ignores the DiT masks), and no KV cache object exists in the graph.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

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


class DitDecoderGraph(torch.nn.Module):
    """``hidden_states [B,T,64], timestep [B], timestep_r [B], encoder_hidden_states [B,T_enc,H],
    context_latents [B,T,128] -> vt [B,T,64]``."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = with_table_sinusoids(transformer)
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
