"""The PyTorch reference 5 Hz LM: transformers ``Qwen3ForCausalLM`` with its KV cache, as upstream's pt backend runs it.

Upstream (``LLMHandler._forward_pass`` in ``acestep/llm_inference.py``) calls the model on the whole prompt with an
all-ones attention mask, then on the last token only with ``past_key_values``; the logits of the last position
drive the host loop (:mod:`acestep_ort.host.lm_planner`). The tokenizer is transformers' ``AutoTokenizer`` (fast),
and the prompt comes from the checkpoint's own chat template, both as upstream uses them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from acestep_ort.host import lm_prompt
from acestep_parity.checkpoint import LM_DIR, load_lm


class HFTokenizer:
    """:class:`acestep_ort.host.lm_tokenizer.LmTokenizer` over transformers' ``AutoTokenizer``."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.hf = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
        self.eos_token_id = int(self.hf.eos_token_id)
        self.pad_token_id = None if self.hf.pad_token_id is None else int(self.hf.pad_token_id)

    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        return list(self.hf(text, padding=False, truncation=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def chat_prompt(self, query: str, instrumental: bool) -> str:
        """``build_formatted_prompt_for_inspiration`` through the checkpoint's chat template."""
        return self.hf.apply_chat_template(lm_prompt.inspiration_messages(query, instrumental), tokenize=False,
                                           add_generation_prompt=True)


class TorchLm:
    """:class:`acestep_ort.host.lm_planner.LmEngine` on ``Qwen3ForCausalLM`` (CPU, float32, DynamicCache)."""

    def __init__(self, root: Path, model=None, config: dict | None = None):
        self.root = Path(root)
        self.model, self.config = (model, config) if model is not None else load_lm(self.root)
        self.tokenizer = HFTokenizer(self.root / LM_DIR)
        if len(self.tokenizer) != self.config["vocab_size"]:
            raise ValueError(f"{self.root / LM_DIR}: config vocab_size {self.config['vocab_size']} != "
                             f"len(tokenizer) {len(self.tokenizer)} (upstream's masks need them equal)")
        self._past = None
        self._length = 0

    @torch.inference_mode()
    def forward(self, ids: np.ndarray, past=None, start: int = 0):
        input_ids = torch.from_numpy(np.asarray(ids, dtype=np.int64).reshape(1, -1))
        mask = torch.ones((1, start + input_ids.shape[1]), dtype=torch.long)
        out = self.model(input_ids=input_ids, attention_mask=mask, past_key_values=past, use_cache=True)
        return out.logits[0].float().numpy(), out.past_key_values

    def lm_start(self, prompt_ids: np.ndarray) -> np.ndarray:
        logits, self._past = self.forward(prompt_ids)
        self._length = int(np.asarray(prompt_ids).size)
        return logits[-1]

    def lm_next(self, token_id: int) -> np.ndarray:
        logits, self._past = self.forward(np.asarray([token_id]), self._past, self._length)
        self._length += 1
        return logits[-1]
