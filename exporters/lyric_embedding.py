"""``lyric_embedding.onnx``: the lyric branch is a token-embedding lookup only (upstream
``infer_lyric_embeddings``), i.e. a single Gather on Qwen3's ``embed_tokens`` table.

It is a graph of its own (not a slice of ``text_encoder.onnx``) so that the runtime never runs the transformer
for up to 2048 lyric tokens, and so that Rust reads the table through ORT instead of re-implementing it.
"""

from __future__ import annotations

import numpy as np
import torch

from acestep_parity.checkpoint import ReferenceModels


class LyricEmbeddingGraph(torch.nn.Module):
    """``input_ids [B, T_lyric] -> lyric_hidden_states [B, T_lyric, D_text]``."""

    def __init__(self, embed_tokens: torch.nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


def build(models: ReferenceModels) -> torch.nn.Module:
    return LyricEmbeddingGraph(models.text_encoder.embed_tokens).eval()


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As ``acestep_parity.torch_ref.TorchEngine.embed_lyrics``."""
    emb = models.text_encoder.embed_tokens(torch.from_numpy(inputs["input_ids"]))
    return {"lyric_hidden_states": emb.float().numpy()}
