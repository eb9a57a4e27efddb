"""Parsing the planner's output text (upstream ``acestep/llm_inference.py`` / ``acestep/inference.py``, 82252c2).

* :func:`parse_lm_output` = ``LLMHandler.parse_lm_output`` (metadata part): the text between ``<think>`` and
  ``</think>`` (or, without the tags, everything before the first audio code), split in lines; a line with no
  leading whitespace that contains ``:`` starts a field (key lower-cased), indented lines continue it, lines
  starting with ``<`` are skipped; bpm/duration become ``int`` when they parse, caption is re-joined to one line
  (``postprocess_caption``), the rest stay stripped strings; a field with an empty value is dropped.
* :func:`extract_lyrics` = ``LLMHandler._extract_lyrics_from_output``: text after ``</think>``, stripped, one
  leading ``# Lyric``/``# Lyrics`` header line removed by upstream's regex ``^#\\s*Lyri[c|cs]?\\s*\\n`` (which in
  fact matches ``# Lyri``, ``# Lyric``, ``# Lyric|``... but not ``# Lyrics``: kept as is), a trailing
  ``<|im_end|>`` removed (``<|endoftext|>`` is not).
* :func:`create_sample_fields` = the end of ``create_sample_from_query`` (lyrics, ``[Instrumental]`` when the
  instrumental flag is set and no lyrics came out, the echoed flag) plus ``inference.create_sample``'s
  conversions (bpm ``int``, duration ``float``, ``'N/A'`` -> ``''``, unparsable numbers -> ``None``).
"""

from __future__ import annotations

import re

_REASONING_PATTERNS = (r"<think>(.*?)</think>", r"<reasoning>(.*?)</reasoning>")


def postprocess_caption(caption: str) -> str:
    """``MetadataConstrainedLogitsProcessor.postprocess_caption``: strip each line, drop blanks, join by spaces."""
    if not caption:
        return caption
    return " ".join(s for s in (line.strip() for line in caption.split("\n")) if s)


def parse_lm_output(text: str) -> dict:
    metadata: dict = {}
    reasoning = None
    for pattern in _REASONING_PATTERNS:
        m = re.search(pattern, text, re.DOTALL)
        if m:
            reasoning = m.group(1).strip()
            break
    if not reasoning:
        reasoning = (text.split("<|audio_code_")[0] if "<|audio_code_" in text else text).strip()
    if not reasoning:
        return metadata
    key: str | None = None
    lines_acc: list[str] = []

    def save() -> None:
        nonlocal key, lines_acc
        if key and lines_acc:
            value = "\n".join(lines_acc)
            if key in ("bpm", "duration"):
                try:
                    metadata[key] = int(value.strip())
                except ValueError:
                    metadata[key] = value.strip()
            elif key == "caption":
                metadata["caption"] = postprocess_caption(value)
            elif key in ("genres", "keyscale", "language", "timesignature"):
                metadata[key] = value.strip()
        key, lines_acc = None, []

    for line in reasoning.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key = name.strip().lower()
            if first.strip():
                lines_acc.append(first)
        elif line.startswith(" ") or line.startswith("\t"):
            if key:
                lines_acc.append(line)
    save()
    return metadata


def extract_lyrics(text: str) -> str:
    m = re.search(r"</think>", text)
    if not m:
        return ""
    after = text[m.end():].strip()
    if not after:
        return ""
    after = re.sub(r"^#\s*Lyri[c|cs]?\s*\n", "", after, flags=re.IGNORECASE)
    after = re.sub(r"<\|im_end\|>\s*$", "", after)
    return after.strip()


def create_sample_fields(text: str, instrumental: bool) -> dict:
    """What ``create_sample_from_query`` returns (``metadata`` dict), for the golden and the fidelity test."""
    metadata = parse_lm_output(text)
    lyrics = extract_lyrics(text)
    if lyrics:
        metadata["lyrics"] = lyrics
    elif instrumental:
        metadata["lyrics"] = "[Instrumental]"
    metadata["instrumental"] = instrumental
    return metadata


def _number(value, cast):
    if value is None or value == "N/A" or value == "":
        return None
    try:
        return cast(value)
    except (ValueError, TypeError):
        return None


def create_sample_result(metadata: dict) -> dict:
    """``inference.create_sample``'s ``CreateSampleResult`` fields from the handler's metadata dict."""
    def na(v: str) -> str:
        return "" if v == "N/A" else v

    return {
        "caption": metadata.get("caption", ""),
        "lyrics": metadata.get("lyrics", ""),
        "bpm": _number(metadata.get("bpm"), int),
        "duration": _number(metadata.get("duration"), float),
        "keyscale": na(metadata.get("keyscale", "")),
        "language": na(metadata.get("language", metadata.get("vocal_language", ""))),
        "timesignature": na(metadata.get("timesignature", "")),
        "instrumental": metadata.get("instrumental", False),
    }
