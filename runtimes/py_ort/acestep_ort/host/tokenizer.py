"""Tokenization with the checkpoint's own ``tokenizer.json`` through the ``tokenizers`` library.

Matches what upstream gets from transformers' fast tokenizer with ``truncation=True, max_length=L``: the
``tokenizer.json`` post-processor appends ``<|endoftext|>``, and truncation keeps room for it. Pad id is the
``pad_token`` of ``tokenizer_config.json`` (``<|endoftext|>`` for Qwen3-Embedding).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class TextTokenizer:
    def __init__(self, tokenizer_json: Path, tokenizer_config: Path | None = None):
        self.path = Path(tokenizer_json)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer file {self.path} does not exist")
        self._tokenizer = Tokenizer.from_file(str(self.path))
        self._tokenizer.no_padding()
        config_path = Path(tokenizer_config) if tokenizer_config else self.path.with_name("tokenizer_config.json")
        pad_token = "<|endoftext|>"
        if config_path.is_file():
            pad = json.loads(config_path.read_text(encoding="utf-8")).get("pad_token")
            pad_token = pad.get("content") if isinstance(pad, dict) else (pad or pad_token)
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{self.path}: pad token {pad_token!r} is not in the vocabulary")
        self.pad_id = int(pad_id)

    def encode(self, text: str, max_length: int) -> np.ndarray:
        self._tokenizer.enable_truncation(max_length=max_length)
        return np.asarray(self._tokenizer.encode(text).ids, dtype=np.int64)
