"""Case files: one JSON object per case in ``cases/``, validated strictly before anything runs.

Schema (``docs/parity_ops.md`` documents it for users):

=================  ==========================  =========================================================
field              type                        meaning
=================  ==========================  =========================================================
id                 str (required)              must equal the file stem, e.g. ``text2music_01``
task               "text2music"|"simple_mode"  simple_mode: the 5 Hz LM planner writes caption/lyrics/metas first
description        str                         what the case is there to break
caption            str                         the music description ("" allowed, as upstream's default)
lyrics             str                         "" (none) or "[Instrumental]" for no vocals
language           str                         lyric language header, default "unknown" (upstream);
                                               simple_mode: the planner's vocal_language (injected)
bpm                int 30..300 or null         null renders "N/A"
keyscale           str                         "" renders "N/A"
timesignature      str                         numerator ("4" = 4/4); "" renders "N/A"
duration           number <= 600, or null      seconds; absent, null or <= 0: upstream's "no duration" (-1):
                                               120 s of latents and "30 seconds" in the metas string
                                               simple_mode: the planner's max_duration (10..600, caps the
                                               LM's duration field; upstream: GPU tier); absent: 240 (CPU tier)
seeds              list[int >= 0], 1..8 items  one per batch item; batch size = len(seeds)
shift              number > 0                  snapped to 1/2/3 (ties to the smaller), default 1.0
timesteps          list[number] or null        custom schedule, snapped to the valid turbo timesteps
output_format      "wav"|"flac"|"mp3"          file written by ``make run`` / the CLIs
query              str                         simple_mode: the user query for the LM planner
instrumental       bool                        simple_mode: the LM's instrumental flag
=================  ==========================  =========================================================
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from acestep_ort.host.pipeline import GenerationRequest

TASKS = ("text2music", "simple_mode")
FORMATS = ("wav", "flac", "mp3")
_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "id": (str, True), "task": (str, True), "description": (str, False), "caption": (str, False),
    "lyrics": (str, False), "language": (str, False), "bpm": ((int, type(None)), False),
    "keyscale": (str, False), "timesignature": (str, False), "duration": ((int, float, type(None)), False),
    "seeds": (list, True), "shift": ((int, float), False), "timesteps": ((list, type(None)), False),
    "output_format": (str, False), "query": (str, False), "instrumental": (bool, False),
}


class CaseError(ValueError):
    """A malformed case file; the message names the file and the field."""


@dataclass(frozen=True)
class InvalidCase:
    """A case file that failed validation: its own test items fail with ``message``; other cases still run."""

    id: str
    path: Path
    message: str
    task: str = "invalid"


@dataclass(frozen=True)
class Case:
    """One validated case file."""

    id: str
    task: str
    path: Path
    description: str
    caption: str
    lyrics: str
    language: str
    bpm: int | None
    keyscale: str
    timesignature: str
    duration: float | None
    seeds: tuple[int, ...]
    shift: float
    timesteps: tuple[float, ...] | None
    output_format: str
    query: str
    instrumental: bool
    sha256: str

    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    def request(self) -> GenerationRequest:
        return GenerationRequest(
            caption=self.caption, lyrics=self.lyrics, language=self.language, bpm=self.bpm,
            keyscale=self.keyscale, timesignature=self.timesignature, duration=self.duration, seeds=self.seeds,
            shift=self.shift, timesteps=self.timesteps,
        )


def _fail(path: Path, field: str, message: str) -> CaseError:
    return CaseError(f"{path}: field {field!r}: {message}")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _number(path: Path, field: str, value) -> float:
    """A JSON number as a finite float; one too large for a float (``1e400``, a 400-digit integer) is refused."""
    try:
        out = float(value)
    except OverflowError:
        raise _fail(path, field, "number out of range (too large for a float)") from None
    if not math.isfinite(out):
        raise _fail(path, field, f"{value!r} is not a finite number")
    return out


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def load_case(path: Path) -> Case:
    """Read and validate one case file (the same verdicts as the Rust runtime's ``case.rs``: NaN/Infinity
    literals and lone surrogate escapes are not JSON, numbers must fit a float)."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read the case file: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw_bytes.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CaseError(f"{path}: not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise CaseError(f"{path}: not a case file: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise CaseError(f"{path}: top level must be a JSON object")
    for key in data:
        if key not in _FIELDS:
            raise _fail(path, key, f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
    for key, (types, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise _fail(path, key, "required field is missing")
            continue
        value = data[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise _fail(path, key, f"expected {types}, got bool")
        if not isinstance(value, types):
            raise _fail(path, key, f"expected {getattr(types, '__name__', types)}, got {type(value).__name__}")
        if _has_lone_surrogate(value):
            raise _fail(path, key, "not valid Unicode text (a lone surrogate escape)")

    if data["id"] != path.stem:
        raise _fail(path, "id", f"{data['id']!r} must equal the file name stem {path.stem!r}")
    if data["task"] not in TASKS:
        raise _fail(path, "task", f"{data['task']!r} is not one of {TASKS}")
    duration = data.get("duration")
    if duration is not None:
        duration = _number(path, "duration", duration)
        if duration > 600:
            raise _fail(path, "duration", f"{duration} is out of range: at most 600 seconds")
        if duration <= 0:
            duration = None  # upstream's -1: no duration
    seeds = data["seeds"]
    if not 1 <= len(seeds) <= 8:
        raise _fail(path, "seeds", f"needs 1..8 seeds (one per batch item), got {len(seeds)}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise _fail(path, "seeds", f"{s!r} is not a non-negative integer seed")
    bpm = data.get("bpm")
    if bpm is not None and not 30 <= bpm <= 300:
        raise _fail(path, "bpm", f"{bpm} is out of range 30..300")
    shift = _number(path, "shift", data.get("shift", 1.0))
    if shift <= 0:
        raise _fail(path, "shift", f"{shift} must be > 0")
    timesteps = data.get("timesteps")
    if timesteps is not None:
        if not timesteps or any(isinstance(t, bool) or not isinstance(t, (int, float)) for t in timesteps):
            raise _fail(path, "timesteps", "must be a non-empty list of numbers")
        if any(not 0 <= _number(path, "timesteps", t) <= 1 for t in timesteps):
            raise _fail(path, "timesteps", "values must lie in [0, 1]")
    fmt = data.get("output_format", "wav")
    if fmt not in FORMATS:
        raise _fail(path, "output_format", f"{fmt!r} is not one of {FORMATS}")
    if data["task"] == "simple_mode" and not data.get("query"):
        raise _fail(path, "query", "simple_mode needs the user query for the LM planner")

    return Case(
        id=data["id"], task=data["task"], path=path, description=data.get("description", ""),
        caption=data.get("caption", ""), lyrics=data.get("lyrics", ""), language=data.get("language", "unknown"),
        bpm=bpm, keyscale=data.get("keyscale", ""), timesignature=data.get("timesignature", ""),
        duration=duration, seeds=tuple(int(s) for s in seeds), shift=shift,
        timesteps=tuple(float(t) for t in timesteps) if timesteps is not None else None, output_format=fmt,
        query=data.get("query", ""), instrumental=bool(data.get("instrumental", False)),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
    )


def discover_cases(cases_dir: Path, patterns: list[str] | None = None) -> list[Case | InvalidCase]:
    """Every case file in ``cases_dir`` (tolerances.json excluded) whose stem matches one of ``patterns``.

    A malformed file does not stop the others: it comes back as an :class:`InvalidCase` carrying its error, so
    the tests of that case fail (file and field named) and every other case runs. A file that was not selected
    is not read at all.
    """
    cases_dir = Path(cases_dir)
    if not cases_dir.is_dir():
        raise CaseError(f"cases folder {cases_dir} does not exist")
    files = sorted(p for p in cases_dir.glob("*.json") if p.name != "tolerances.json")
    if patterns:
        files = [p for p in files if any(fnmatch.fnmatch(p.stem, pat) for pat in patterns)]
    out: list[Case | InvalidCase] = []
    for path in files:
        try:
            out.append(load_case(path))
        except CaseError as exc:
            out.append(InvalidCase(id=path.stem, path=path, message=str(exc)))
    return out


def valid_cases(cases: list[Case | InvalidCase]) -> list[Case]:
    """The loadable cases; raises the first error when one of ``cases`` is malformed (for CLIs)."""
    for case in cases:
        if isinstance(case, InvalidCase):
            raise CaseError(case.message)
    return [c for c in cases if isinstance(c, Case)]


def resolve_case(arg: str | Path, cases_dir: Path) -> Case:
    """``--case`` of the CLIs: a case file path, or a case id looked up in ``cases_dir`` (``--cases-dir``)."""
    path = Path(arg)
    if path.is_file():
        return load_case(path)
    candidate = Path(cases_dir) / f"{arg}.json"
    if candidate.is_file():
        return load_case(candidate)
    raise CaseError(f"case {arg!r}: no such file, and no {candidate}")
