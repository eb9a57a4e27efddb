"""``text_encoder.onnx``: the caption branch, Qwen3Model's last hidden state with NO attention mask.

Upstream (and ``acestep_parity.torch_ref``) call ``text_encoder(input_ids=ids)`` without a mask: Qwen3 attention is
causal, so right padding can never reach a valid token, and the padded rows are ignored downstream through
``text_attention_mask``. The graph keeps exactly that call (sdpa attention, causal mask built from the dynamic
sequence length inside the graph).
"""

from __future__ import annotations

import numpy as np
import torch

from acestep_parity.checkpoint import ReferenceModels


class TextEncoderGraph(torch.nn.Module):
    """``input_ids [B, T_text] -> text_hidden_states [B, T_text, D_text]``."""

    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids=input_ids, use_cache=False).last_hidden_state


def build(models: ReferenceModels) -> torch.nn.Module:
    implementation = models.text_encoder.config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"text encoder attention {implementation!r}: export needs sdpa (the reference) or eager")
    return TextEncoderGraph(models.text_encoder).eval()


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch reference call, exactly as ``acestep_parity.torch_ref.TorchEngine.encode_text``."""
    out = models.text_encoder(input_ids=torch.from_numpy(inputs["input_ids"]))
    return {"text_hidden_states": out.last_hidden_state.float().numpy()}
