"""The tokenizer view the 5 Hz LM host logic needs, and upstream's LM constants.

Upstream's planner code (``acestep/constrained_logits_processor.py``, ``acestep/llm_inference.py``) only ever
calls ``tokenizer.encode(text, add_special_tokens=False)``, ``tokenizer.decode([id])`` (special tokens kept),
``len(tokenizer)``, ``eos_token_id`` and ``pad_token_id``. :class:`LmTokenizer` is that surface. Two adapters
exist: :class:`FastTokenizer` (the ``tokenizers`` library plus ``tokenizer_config.json``; torch-free, used by the
ONNX runtime) and ``acestep_parity.torch_ref``'s wrapper around transformers' ``AutoTokenizer`` (what upstream uses).

Constants are restated from upstream's ``acestep/constants.py`` at commit 82252c2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

LM_DIR = "acestep-5Hz-lm-0.6B"  # the planner folder in a checkpoint (upstream's default is the 1.7B one)
GENRES_FILE = "genres_vocab.txt"  # the synthetic checkpoint ships its list here; real runs pass upstream's
GENRES_ENV = "ACESTEP_GENRES_VOCAB"

# acestep/constants.py (82252c2)
VALID_LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en",
    "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
    "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh",
    "unknown",
)
KEYSCALE_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEYSCALE_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEYSCALE_MODES = ("major", "minor")
VALID_KEYSCALES = tuple(f"{n}{a} {m}" for n in KEYSCALE_NOTES for a in KEYSCALE_ACCIDENTALS for m in KEYSCALE_MODES)
BPM_MIN, BPM_MAX = 30, 300
DURATION_MIN, DURATION_MAX = 10, 600
VALID_TIME_SIGNATURES = (2, 3, 4, 6)
MAX_AUDIO_CODE = 63999  # constrained_logits_processor.py: codebook size 64000
DEFAULT_LM_INSPIRED_INSTRUCTION = "Expand the user's input into a more detailed and specific musical description:"


def genres_path(checkpoint_dir: Path) -> Path:
    """The genres list the planner constrains ``genres:`` with: ``$ACESTEP_GENRES_VOCAB`` or the LM folder's
    ``genres_vocab.txt`` (upstream reads ``acestep/genres_vocab.txt`` from its code package; for a real checkpoint
    take that file, byte-identical in the PyPI package ``ace-step15-fork==20260212``)."""
    import os

    override = os.environ.get(GENRES_ENV)
    path = Path(override) if override else Path(checkpoint_dir) / LM_DIR / GENRES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"genres vocabulary {path} not found: set {GENRES_ENV} to upstream's "
                                "acestep/genres_vocab.txt (see docs/lm_planner.md)")
    return path


class LmTokenizer(Protocol):
    """What the planner's host logic asks of a tokenizer (upstream calls nothing else)."""

    eos_token_id: int
    pad_token_id: int | None

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...  # add_special_tokens=False

    def encode_prompt(self, text: str) -> list[int]: ...  # what ``tokenizer(prompt)`` gives (special tokens on)

    def decode(self, ids: list[int]) -> str: ...  # skip_special_tokens=False


class FastTokenizer:
    """:class:`LmTokenizer` over ``tokenizer.json`` + ``tokenizer_config.json`` with the ``tokenizers`` library."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))

        def token_id(entry) -> int | None:
            if entry is None:
                return None
            content = entry["content"] if isinstance(entry, dict) else entry
            found = self._tok.token_to_id(content)
            if found is None:
                raise ValueError(f"{folder / 'tokenizer_config.json'}: token {content!r} is not in tokenizer.json")
            return int(found)

        eos = token_id(config.get("eos_token"))
        if eos is None:
            raise ValueError(f"{folder / 'tokenizer_config.json'}: no eos_token")
        self.eos_token_id = eos
        self.pad_token_id = token_id(config.get("pad_token"))
        self.chat_template = config.get("chat_template")

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_prompt(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)
