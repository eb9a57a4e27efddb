"""``import-cases`` field by field: each source field of each format, with the values upstream's own loader
treats specially (``None`` / ``"N/A"`` / ``""`` = not given, ``-1`` / ``0`` = no duration, integer time
signatures, numeric strings), mapped to the exact value the case schema gets. One row per rule, so a changed
mapping fails by name (``-k "upstream-t2m and bpm"``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from acestep_parity.import_cases import convert

SOURCE = Path("example.json")
BASES = {
    "upstream-t2m": {"caption": "c", "think": False},
    "upstream-simple": {"description": "q"},
    "predecessor": {"case_id": "p", "mode": "text2music", "caption": "c"},
    "predecessor-simple": {"case_id": "p", "mode": "simple_mode", "simple_mode_query": "q"},
}
# (format, source field ("metadata.x" = inside metadata), source value, case field, expected value)
ROWS = [
    ("upstream-t2m", "caption", "a song", "caption", "a song"),
    ("upstream-t2m", "caption", "N/A", "caption", ""),
    ("upstream-t2m", "lyrics", "[verse] la", "lyrics", "[verse] la"),
    ("upstream-t2m", "lyrics", None, "lyrics", ""),
    ("upstream-t2m", "language", "ja", "language", "ja"),
    ("upstream-t2m", "language", "", "language", "unknown"),
    ("upstream-t2m", "language", "N/A", "language", "unknown"),
    ("upstream-t2m", "bpm", 120, "bpm", 120),
    ("upstream-t2m", "bpm", "96", "bpm", 96),
    ("upstream-t2m", "bpm", 88.0, "bpm", 88),
    ("upstream-t2m", "bpm", "N/A", "bpm", None),
    ("upstream-t2m", "bpm", None, "bpm", None),
    ("upstream-t2m", "keyscale", "F# minor", "keyscale", "F# minor"),
    ("upstream-t2m", "keyscale", "N/A", "keyscale", ""),
    ("upstream-t2m", "timesignature", 3, "timesignature", "3"),
    ("upstream-t2m", "timesignature", "4", "timesignature", "4"),
    ("upstream-t2m", "timesignature", "", "timesignature", ""),
    ("upstream-t2m", "duration", 30, "duration", 30.0),
    ("upstream-t2m", "duration", "12.5", "duration", 12.5),
    ("upstream-t2m", "duration", -1, "duration", None),
    ("upstream-t2m", "duration", 0, "duration", None),
    ("upstream-t2m", "duration", "N/A", "duration", None),
    ("upstream-t2m", "think", True, "task", "text2music"),
    ("upstream-simple", "description", "a lullaby", "query", "a lullaby"),
    ("upstream-simple", "description", "", "query", "NO USER INPUT"),
    ("upstream-simple", "description", None, "query", "NO USER INPUT"),
    ("upstream-simple", "instrumental", True, "instrumental", True),
    ("upstream-simple", "instrumental", False, "instrumental", False),
    ("upstream-simple", "vocal_language", "es", "language", "es"),
    ("upstream-simple", "vocal_language", "N/A", "language", "unknown"),
    ("upstream-simple", "description", "x", "task", "simple_mode"),
    ("predecessor", "seed", 1234, "seeds", [1234]),
    ("predecessor", "shift", 1, "shift", 1.0),
    ("predecessor", "audio_format", "flac", "output_format", "flac"),
    ("predecessor", "lyrics", "[Instrumental]", "lyrics", "[Instrumental]"),
    ("predecessor", "metadata.keyscale", "C minor", "keyscale", "C minor"),
    ("predecessor", "metadata.bpm", "140", "bpm", 140),
    ("predecessor", "metadata.bpm", "N/A", "bpm", None),
    ("predecessor", "metadata.vocal_language", "zh", "language", "zh"),
    ("predecessor", "metadata.vocal_language", None, "language", "unknown"),
    ("predecessor", "metadata.duration", 45, "duration", 45.0),
    ("predecessor", "metadata.duration", -1, "duration", None),
    ("predecessor", "metadata.timesignature", 6, "timesignature", "6"),
    ("predecessor", "metadata.timesignature", "N/A", "timesignature", ""),
    ("predecessor-simple", "simple_mode_query", "rainy night", "query", "rainy night"),
    ("predecessor-simple", "metadata.instrumental", True, "instrumental", True),
    ("predecessor-simple", "metadata.vocal_language", "fr", "language", "fr"),
]


def _id(row: tuple) -> str:
    fmt, source, value, _, _ = row
    return f"{fmt}-{source}-{value!r}".replace(" ", "_")


@pytest.mark.parametrize("fmt,source,value,target,expected", ROWS, ids=[_id(r) for r in ROWS])
def test_import_maps_field(fmt, source, value, target, expected, record_property):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASES[fmt].items()}
    if source.startswith("metadata."):
        data.setdefault("metadata", {})[source.split(".", 1)[1]] = value
    else:
        data[source] = value
    case, _, _ = convert(SOURCE, data, seed=7, shift=2.5, strict=False)
    record_property("mapped", repr(case.get(target)))
    assert case.get(target) == expected, case


@pytest.mark.parametrize("fmt", ["upstream-t2m", "upstream-simple"])
def test_upstream_examples_get_the_importers_seed_and_shift(fmt):
    case, _, notes = convert(SOURCE, dict(BASES[fmt]), seed=7, shift=2.5, strict=False)
    assert (case["seeds"], case["shift"]) == ([7], 2.5)
    assert any("seed 7 and shift 2.5 set by the importer" in n for n in notes)


def test_predecessor_keeps_its_own_seed_and_shift():
    case, _, _ = convert(SOURCE, {**BASES["predecessor"], "seed": 9, "shift": 1.5}, seed=7, shift=2.5, strict=False)
    assert (case["seeds"], case["shift"]) == ([9], 1.5)
    default, _, _ = convert(SOURCE, dict(BASES["predecessor"]), seed=7, shift=2.5, strict=False)
    assert (default["seeds"], default["shift"]) == ([42], 3.0)  # its loader's defaults, not the importer's
