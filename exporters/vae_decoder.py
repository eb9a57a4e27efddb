"""``vae_decoder.onnx``: Oobleck decoder, ``latents [B, 64, T] -> audio [B, 2, 1920*T]``, weight norm folded.

The checkpoint loader builds ``AutoencoderOobleck`` with the legacy ``torch.nn.utils.weight_norm`` hooks, which
recompute ``w = g * v / ||v||`` before every call. The export wrapper works on a deep copy whose hooks are removed
with ``remove_weight_norm``: that writes the same ``_weight_norm(v, g, dim)`` result into a plain ``weight`` (the
reference module keeps its hooks). The norm axis is the hook's own ``dim``: 0, which is the *output* channel for
Conv1d ``[Cout, Cin, k]`` but the *input* channel for ConvTranspose1d ``[Cin, Cout, k]`` (a hand-written fold that
assumes output channels gets the transposed convolutions wrong). Tiling stays on the host.

Each upsampling ``ConvTranspose1d`` (kernel ``2*stride``, stride ``s``, padding ``ceil(s/2)``) is exported as
the same linear map written as a stride-phase ("sub-pixel") ``Conv``: output sample ``n`` with ``n + p = q*s + r``
meets exactly two inputs, ``x[q]`` through tap ``r`` and ``x[q-1]`` through tap ``r + s``. So a kernel-2 ``Conv``
with ``s * Cout`` output channels (phase ``r`` of channel ``o`` at ``o*s + r``) over ``x`` padded by one zero on
each side gives every phase at every ``q``; a reshape and transpose interleave the phases and a slice drops the
``p`` leading and trailing samples. ONNX Runtime runs that Conv as one large SGEMM, where its ConvTranspose
(GEMM then col2im) reached about a third of the SGEMM rate on the real decoder (docs/performance.md, op
profile). The sum runs in another order than torch's ``conv_transpose1d``, so the graph is not bit-equal to the
reference; the per-graph onnx~torch gates and the audio gates hold it (measured in docs/performance.md).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from acestep_parity.checkpoint import ReferenceModels


def fold_weight_norm(module: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``module`` with every legacy weight_norm hook folded into a plain weight; (copy, count)."""
    folded = copy.deepcopy(module)
    count = 0
    for sub in folded.modules():
        if hasattr(sub, "weight_g") and hasattr(sub, "weight_v"):
            torch.nn.utils.remove_weight_norm(sub)
            count += 1
    return folded, count


class SubPixelConvTranspose1d(torch.nn.Module):
    """A ``ConvTranspose1d(Cin, Cout, 2*s, stride=s, padding=p)`` (weight norm folded) as a kernel-2 ``Conv1d``
    to ``s * Cout`` channels, a phase interleave and a slice: the same map, one GEMM (module docstring)."""

    def __init__(self, conv_t: torch.nn.ConvTranspose1d):
        super().__init__()
        (stride,), (kernel,), (pad,) = conv_t.stride, conv_t.kernel_size, conv_t.padding
        if kernel != 2 * stride or conv_t.groups != 1 or conv_t.dilation != (1,) or conv_t.output_padding != (0,):
            raise ValueError(f"sub-pixel form needs kernel 2*stride, groups 1, no dilation or output padding: {conv_t}")
        weight = conv_t.weight.detach()  # [Cin, Cout, 2s]
        c_in, c_out = weight.shape[0], weight.shape[1]
        taps = torch.stack([weight[:, :, stride:], weight[:, :, :stride]], dim=-1)  # [Cin, Cout, s, 2]: x[q-1], x[q]
        self.register_buffer("weight", taps.permute(1, 2, 0, 3).reshape(c_out * stride, c_in, 2).contiguous())
        bias = conv_t.bias.detach() if conv_t.bias is not None else torch.zeros(c_out)
        self.register_buffer("bias", bias.repeat_interleave(stride).contiguous())
        self.stride, self.pad, self.c_out = stride, pad, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[0], x.shape[-1]
        phases = F.conv1d(x, self.weight, self.bias, padding=1)  # [B, Cout*s, L+1]
        full = phases.reshape(batch, self.c_out, self.stride, length + 1).transpose(2, 3)
        full = full.reshape(batch, self.c_out, (length + 1) * self.stride)
        return full.narrow(2, self.pad, (length + 1) * self.stride - 2 * self.pad)


def to_sub_pixel(module: torch.nn.Module) -> int:
    """Replace, in place, every ``ConvTranspose1d`` under ``module`` by :class:`SubPixelConvTranspose1d`."""
    targets = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if isinstance(child, torch.nn.ConvTranspose1d)]
    for parent, name, child in targets:
        setattr(parent, name, SubPixelConvTranspose1d(child))
    return len(targets)


class VaeDecoderGraph(torch.nn.Module):
    """``latents [B, 64, T] -> audio [B, 2, 1920*T]``."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae, self.folded = fold_weight_norm(vae)
        self.sub_pixel = to_sub_pixel(self.vae.decoder)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def build(models: ReferenceModels) -> torch.nn.Module:
    return VaeDecoderGraph(models.vae).eval()


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As ``acestep_parity.torch_ref.TorchEngine.decode_latents`` (hooks active)."""
    return {"audio": models.vae.decode(torch.from_numpy(inputs["latents"])).sample.float().numpy()}
