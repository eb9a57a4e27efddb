"""Shared wrapper of the two 5 Hz LM graphs: Qwen3ForCausalLM with the KV cache as explicit tensors.

The wrapper runs the library modules of ``transformers.Qwen3ForCausalLM`` (embedding, per-layer RMSNorms,
q/k/v/o projections, q_norm/k_norm, the model's own rotary embedding, MLP, final norm, lm_head) and only spells
out what the library hides behind its ``Cache`` object: the keys/values of every layer are stacked into two
tensors ``[L, B, KV, P, Dh]`` (RoPE'd keys after ``k_norm``, as transformers caches them), the new tokens'
positions are ``P .. P+T-1`` and attention is ``scaled_dot_product_attention`` over ``[past | new]`` with the
causal mask ``key <= P + query`` (GQA keys/values repeated per query group, scale ``head_dim ** -0.5``; what
transformers' sdpa path computes). Only the last position's logits leave the graph: the host loop never needs
the others.
"""

from __future__ import annotations

import numpy as np
import torch


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


class LmGraph(torch.nn.Module):
    """``(input_ids [B, T], past_keys/values [L, B, KV, P, Dh] or none) -> (logits [B, V], present keys/values)``."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm
        cfg = lm.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)

    def run(self, input_ids: torch.Tensor, past_keys: torch.Tensor | None, past_values: torch.Tensor | None):
        from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

        model = self.lm.model
        batch, new = input_ids.shape[0], input_ids.shape[1]
        past = 0 if past_keys is None else past_keys.shape[3]
        x = model.embed_tokens(input_ids)
        positions = (torch.arange(new, dtype=torch.int64) + past).unsqueeze(0).expand(batch, new)
        cos, sin = model.rotary_emb(x, positions)
        query_pos = torch.arange(new, dtype=torch.int64).unsqueeze(1) + past
        key_pos = torch.arange(past + new, dtype=torch.int64).unsqueeze(0)
        mask = key_pos <= query_pos  # [T, P+T] causal over the whole cache
        keys, values = [], []
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_norm(attn.q_proj(h).view(batch, new, self.heads, self.head_dim)).transpose(1, 2)
            k = attn.k_norm(attn.k_proj(h).view(batch, new, self.kv_heads, self.head_dim)).transpose(1, 2)
            v = attn.v_proj(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if past_keys is not None:
                k = torch.cat([past_keys[i], k], dim=2)
                v = torch.cat([past_values[i], v], dim=2)
            keys.append(k)
            values.append(v)
            groups = self.heads // self.kv_heads
            out = torch.nn.functional.scaled_dot_product_attention(
                q, _repeat_kv(k, groups), _repeat_kv(v, groups), attn_mask=mask, scale=attn.scaling)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, new, self.heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = model.norm(x[:, -1, :])
        return self.lm.lm_head(x), torch.stack(keys), torch.stack(values)


def check_attention(models) -> None:
    implementation = models.lm.config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"LM attention {implementation!r}: export needs sdpa (the reference) or eager")


def cache_tensors(cache) -> tuple[torch.Tensor, torch.Tensor]:
    """A transformers ``DynamicCache`` as stacked ``[L, B, KV, P, Dh]`` keys and values."""
    if hasattr(cache, "layers"):
        return (torch.stack([layer.keys for layer in cache.layers]),
                torch.stack([layer.values for layer in cache.layers]))
    return torch.stack(list(cache.key_cache)), torch.stack(list(cache.value_cache))


@torch.inference_mode()
def reference(models, input_ids: np.ndarray, past_keys: np.ndarray | None = None,
              past_values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """transformers' own forward (sdpa) with a ``DynamicCache`` holding the given past: what the reference LM
    (``acestep_parity.torch_ref.lm.TorchLm``) runs."""
    from transformers import DynamicCache

    ids = torch.from_numpy(input_ids)
    batch, new = ids.shape
    past = 0 if past_keys is None else past_keys.shape[3]
    cache = DynamicCache()
    if past_keys is not None:
        for i in range(past_keys.shape[0]):
            cache.update(torch.from_numpy(past_keys[i]), torch.from_numpy(past_values[i]), i)
    positions = (torch.arange(new) + past).unsqueeze(0).expand(batch, new)
    out = models.lm(input_ids=ids, attention_mask=torch.ones((batch, past + new), dtype=torch.long),
                    position_ids=positions, past_key_values=cache, use_cache=True)
    keys, values = cache_tensors(out.past_key_values)
    return {"logits": out.logits[:, -1, :].float().numpy(), "present_keys": keys.float().numpy(),
            "present_values": values.float().numpy()}
