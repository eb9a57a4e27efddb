"""``condition_encoder.onnx``: text projector + lyric encoder + timbre encoder + packing, export-friendly.

The diffusers module has two data-dependent pieces that ``torch.export`` cannot trace with dynamic shapes:

* ``AceStepTimbreEncoder.unpack_timbre_embeddings`` sizes its output with ``int(order.max().item() + 1)`` and
  ``counts.max().item()`` (bincount) and scatters with a one-hot matmul. In text2music every batch item has
  exactly one timbre reference and the order mask is ``arange(B)``, so the unpacked timbre is the pooled row of
  item b as its single token with mask 1 (:func:`unpack_one_per_item`). The graph therefore takes the order
  mask implicitly; the host must pass references in item order, one each (``host.latents.timbre_reference``).
* ``_pack_sequences`` (called twice) stably argsorts the concatenated 0/1 mask so valid tokens come first. Two
  successive stable partitions of ``[lyric | timbre]`` then ``[.. | text]`` equal one stable partition of
  ``[lyric | timbre | text]``; :func:`pack_valid_first` computes each token's destination with cumulative sums
  (valid: number of valid tokens before it; padding: number of valid tokens in the row + number of padding
  tokens before it), inverts that permutation with a ScatterElements and gathers, which is exact (a pure
  permutation) and has no data-dependent shapes. The new mask is ``arange(L) < sum(mask)`` as in diffusers.

Everything else (projector, lyric encoder with its padding-aware 4-D masks, timbre encoder layers, RoPE) is the
diffusers code, called through its own submodules.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.models.transformers.ace_step_transformer import _ace_step_rotary_freqs, _create_4d_mask

from acestep_parity.checkpoint import ReferenceModels


def unpack_one_per_item(pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unpack_timbre_embeddings(pooled [B, H], arange(B))`` without data-dependent sizes: ``[B,1,H]``, ones."""
    mask = torch.ones_like(pooled[:, :1], dtype=torch.long)
    return pooled.unsqueeze(1), mask


def pack_valid_first(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable partition of each row of ``hidden [B, L, H]`` so that ``mask != 0`` positions come first.

    Equals ``_pack_sequences``'s ``argsort(descending=True, stable=True)`` for 0/1 masks; returns the packed
    states and the bool mask ``arange(L) < count(mask)``.
    """
    valid = (mask != 0).to(torch.long)
    invalid = 1 - valid
    n_valid = valid.sum(dim=1, keepdim=True)
    rank_valid = torch.cumsum(valid, dim=1) - valid
    rank_invalid = torch.cumsum(invalid, dim=1) - invalid
    dest = torch.where(valid.bool(), rank_valid, n_valid + rank_invalid)  # [B, L], a permutation per row
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0).expand_as(dest)
    source = torch.zeros_like(dest).scatter(1, dest, positions)  # inverse permutation
    packed = torch.gather(hidden, 1, source.unsqueeze(-1).expand_as(hidden))
    new_mask = positions < n_valid
    return packed, new_mask


class ConditionEncoderGraph(torch.nn.Module):
    """``(text, text_mask, lyric, lyric_mask, timbre_reference) -> (encoder_hidden_states, encoder_attention_mask)``."""

    def __init__(self, condition_encoder: torch.nn.Module):
        super().__init__()
        self.encoder = condition_encoder

    def pooled_timbre(self, timbre_reference: torch.Tensor) -> torch.Tensor:
        """``AceStepTimbreEncoder.forward`` up to the position-0 pooling (before the unpacking)."""
        timbre = self.encoder.timbre_encoder
        hidden = timbre.embed_tokens(timbre_reference)
        seq_len = hidden.shape[1]
        cos, sin = _ace_step_rotary_freqs(seq_len, timbre.head_dim, timbre.rope_theta, hidden.device, hidden.dtype)
        sliding = _create_4d_mask(seq_len=seq_len, dtype=hidden.dtype, device=hidden.device, attention_mask=None,
                                  sliding_window=timbre.sliding_window, is_sliding_window=True, is_causal=False)
        for layer_type, layer in zip(timbre._layer_types, timbre.layers, strict=True):
            mask = sliding if layer_type == "sliding_attention" else None
            hidden = layer(hidden_states=hidden, position_embeddings=(cos, sin), attention_mask=mask)
        return timbre.norm(hidden)[:, 0, :]

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                timbre_reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.encoder.text_projector(text_hidden_states)
        lyric = self.encoder.lyric_encoder(inputs_embeds=lyric_hidden_states, attention_mask=lyric_attention_mask)
        timbre, timbre_mask = unpack_one_per_item(self.pooled_timbre(timbre_reference))
        hidden = torch.cat([lyric, timbre, text], dim=1)
        mask = torch.cat([lyric_attention_mask.to(torch.long), timbre_mask, text_attention_mask.to(torch.long)],
                         dim=1)
        return pack_valid_first(hidden, mask)


def build(models: ReferenceModels) -> torch.nn.Module:
    from acestep_parity.exporters.dit_decoder import require_native_attention

    encoder = models.condition_encoder
    require_native_attention(encoder.lyric_encoder.layers)
    require_native_attention(encoder.timbre_encoder.layers)
    return ConditionEncoderGraph(encoder).eval()


@torch.inference_mode()
def reference(models: ReferenceModels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The diffusers module itself, called as ``acestep_parity.torch_ref.TorchEngine.encode_condition``."""
    batch = inputs["text_hidden_states"].shape[0]
    enc, mask = models.condition_encoder(
        text_hidden_states=torch.from_numpy(inputs["text_hidden_states"]),
        text_attention_mask=torch.from_numpy(inputs["text_attention_mask"]).long(),
        lyric_hidden_states=torch.from_numpy(inputs["lyric_hidden_states"]),
        lyric_attention_mask=torch.from_numpy(inputs["lyric_attention_mask"]).long(),
        refer_audio_acoustic_hidden_states_packed=torch.from_numpy(inputs["timbre_reference"]),
        refer_audio_order_mask=torch.arange(batch, dtype=torch.long),
    )
    return {"encoder_hidden_states": enc.float().numpy(), "encoder_attention_mask": mask.bool().numpy()}
