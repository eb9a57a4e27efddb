"""``vae_decoder.onnx``: Oobleck decoder, ``latents [B, 64, T] -> audio [B, 2, 1920*T]``, weight norm folded.

The checkpoint loader builds ``AutoencoderOobleck`` with the legacy ``torch.nn.utils.weight_norm`` hooks, which
recompute ``w = g * v / ||v||`` before every call. The export wrapper works on a deep copy whose hooks are removed
with ``remove_weight_norm``: that writes the same ``_weight_norm(v, g, dim)`` result into a plain ``weight`` (the
reference module keeps its hooks). The norm axis is the hook's own ``dim``: 0, which is the *output* channel for
Conv1d ``[Cout, Cin, k]`` but the *input* channel for ConvTranspose1d ``[Cin, Cout, k]`` (a hand-written fold that
assumes output channels gets the transposed convolutions wrong). Tiling stays on the host.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

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


class VaeDecoderGraph(torch.nn.Module):
    """``latents [B, 64, T] -> audio [B, 2, 1920*T]``."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae, self.folded = fold_weight_norm(vae)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


def build(models: ReferenceModels) -> torch.nn.Module:
    return VaeDecoderGraph(models.vae).eval()


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As ``acestep_parity.torch_ref.TorchEngine.decode_latents`` (hooks active)."""
    return {"audio": models.vae.decode(torch.from_numpy(inputs["latents"])).sample.float().numpy()}
