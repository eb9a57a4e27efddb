"""Prompt strings for the DiT caption and lyric branches, exactly as upstream ACE-Step 1.5 builds them.

Reproduces ``SFT_GEN_PROMPT`` (acestep/constants.py), ``_format_instruction``, ``_format_lyrics``,
``extract_caption_from_sft_format``, ``_build_metadata_dict`` and ``_dict_to_meta_string`` (handler mixins at
upstream commit 82252c2). Every backend (torch reference, Python ORT runtime, Rust by port) uses these strings.
"""

from __future__ import annotations

import re

DEFAULT_DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
SFT_GEN_PROMPT = "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n"
DEFAULT_LANGUAGE = "unknown"
TEXT_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 2048


def format_instruction(instruction: str) -> str:
    """Append ':' when missing (upstream ``_format_instruction``)."""
    return instruction if instruction.endswith(":") else instruction + ":"


def extract_caption_from_sft_format(caption: str) -> str:
    """Strip an embedded '# Instruction / # Caption' wrapper, keeping the caption body (upstream helper)."""
    if "# Instruction" in caption and "# Caption" in caption:
        match = re.search(r"#\s*Caption\s*\n(.*?)(?:\n\s*#\s*Metas|$)", caption, re.DOTALL)
        if match:
            return match.group(1).strip()
    return caption


def metas_string(
    bpm: int | None = None,
    keyscale: str = "",
    timesignature: str = "",
    duration: float | None = None,
) -> str:
    """The '# Metas' block.

    Upstream builds a dict (bpm falsy -> "N/A", blank keyscale -> "N/A", blank or "N/A" time signature -> "N/A",
    duration only when known and > 0 as ``f"{int(d)} seconds"``) and renders it; a missing duration renders as the
    dict default "30 seconds" whatever the real length is.
    """
    bpm_text = str(bpm) if bpm else "N/A"
    key_text = keyscale if keyscale.strip() else "N/A"
    ts_text = timesignature if (timesignature.strip() and timesignature != "N/A") else "N/A"
    dur_text = f"{int(duration)} seconds" if (duration is not None and float(duration) > 0) else "30 seconds"
    return f"- bpm: {bpm_text}\n- timesignature: {ts_text}\n- keyscale: {key_text}\n- duration: {dur_text}\n"


def caption_prompt(caption: str, metas: str, instruction: str = DEFAULT_DIT_INSTRUCTION) -> str:
    """Text-encoder input: ``SFT_GEN_PROMPT`` filled with instruction, cleaned caption and metas."""
    return SFT_GEN_PROMPT.format(format_instruction(instruction), extract_caption_from_sft_format(caption), metas)


def lyric_prompt(lyrics: str, language: str = DEFAULT_LANGUAGE) -> str:
    """Lyric-branch input (upstream ``_format_lyrics``)."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>"
