"""``acestep-parity import-cases``: case files people already have, converted field by field into the schema.

Two formats are read (each detected per file from its fields):

* **upstream ACE-Step 1.5 examples** — ``examples/text2music/*.json`` (``caption`` or ``prompt``, ``lyrics``,
  ``bpm``, ``duration``, ``keyscale``, ``language``, ``timesignature``, ``think``) and
  ``examples/simple_mode/*.json`` (``description``, ``instrumental``, ``vocal_language``). Values are read the way
  upstream's Gradio loader (``load_random_example``) reads them: ``None``/``"N/A"``/``""`` mean "not given".
  Every upstream text2music example sets ``think: true`` (the LM audio-code path, outside the plan's first
  release): it is imported as the ``thinking=False`` text2music case it also describes, and the report says so
  per file; ``--strict`` refuses it instead.
* **the predecessor port's fixtures** (``fixtures/cases/*.json``: ``case_id, mode, seed, inference_steps, shift,
  infer_method, thinking, caption, lyrics, simple_mode_query, lm_model_variant, lm_sampling{…},
  metadata{instrumental, vocal_language, bpm, keyscale, timesignature, duration}``), mapped as its
  ``tools/baseline/dump_baseline.py`` hands them to upstream.

Upstream examples carry no seed or shift; ``--seed`` (default 42) and ``--shift`` (default 3.0, upstream's UI/CLI
default) fill them and are reported. What the schema cannot represent is refused, naming the file and the field.
Every written file is re-read with :func:`acestep_ort.host.case.load_case`, so what comes out is a valid case.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from acestep_ort.host.case import FORMATS, CaseError, load_case

UPSTREAM_T2M_FIELDS = {"caption", "prompt", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature",
                       "think"}
UPSTREAM_SIMPLE_FIELDS = {"description", "instrumental", "vocal_language"}
PREDECESSOR_FIELDS = {"case_id", "mode", "seed", "inference_steps", "shift", "infer_method", "thinking", "caption",
                      "lyrics", "simple_mode_query", "lm_model_variant", "lm_sampling", "metadata", "deterministic",
                      "audio_format", "expected"}
PREDECESSOR_METADATA = {"instrumental", "vocal_language", "bpm", "keyscale", "timesignature", "duration"}
_NOT_GIVEN = (None, "N/A", "")


class ImportRefused(ValueError):
    """A file the schema cannot represent; the message names the file and the field."""


@dataclass
class Imported:
    source: Path
    target: Path
    fmt: str
    notes: list[str] = field(default_factory=list)


def _refuse(path: Path, fld: str, why: str) -> ImportRefused:
    return ImportRefused(f"{path}: field {fld!r}: {why}")


def _case_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "case"


def detect_format(data: dict) -> str:
    keys = set(data)
    if {"id", "task"} <= keys:
        return "project"
    if keys & {"case_id", "mode", "simple_mode_query", "metadata", "inference_steps", "infer_method"}:
        return "predecessor"
    if "description" in keys:
        return "upstream-simple_mode"
    return "upstream-text2music"


def _number_or_none(path: Path, fld: str, value) -> float | None:
    """A number, or None for upstream's "not given" values; anything else is refused naming the field."""
    if value in _NOT_GIVEN:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _refuse(path, fld, f"{value!r} is not a number") from None


def _int_or_none(path: Path, fld: str, value) -> int | None:
    number = _number_or_none(path, fld, value)
    if number is not None and number != int(number):
        raise _refuse(path, fld, f"{value!r} is not a whole number")
    return None if number is None else int(number)


def _float_or_none(path: Path, fld: str, value) -> float | None:
    number = _number_or_none(path, fld, value)
    return None if number is None or number <= 0 else number  # upstream: -1 / 0 mean "no duration"


def _text(path: Path, fld: str, value) -> str:
    if value in _NOT_GIVEN:
        return ""
    if not isinstance(value, str):
        raise _refuse(path, fld, f"expected a string, got {type(value).__name__}")
    return value


def _check_fields(path: Path, data: dict, allowed: set[str], fmt: str) -> None:
    for key in data:
        if key not in allowed:
            raise _refuse(path, key, f"not a field of the {fmt} format (known: {', '.join(sorted(allowed))})")


def _think(path: Path, fld: str, value, strict: bool, notes: list[str]) -> None:
    if not isinstance(value, bool):
        raise _refuse(path, fld, f"expected true/false, got {value!r}")
    if value:
        if strict:
            raise _refuse(path, fld, "true asks for the LM audio-code path (thinking=True), outside the plan's "
                                     "first release; without --strict it is imported as thinking=False")
        notes.append(f"{fld}: true imported as thinking=False (the text2music case without LM audio codes)")


def convert(path: Path, data: dict, *, seed: int, shift: float, strict: bool) -> tuple[dict, str, list[str]]:
    """One source object -> (case dict, detected format, notes)."""
    fmt = detect_format(data)
    notes: list[str] = []
    if fmt == "project":
        return data, fmt, notes
    if fmt == "upstream-text2music":
        _check_fields(path, data, UPSTREAM_T2M_FIELDS, fmt)
        if "caption" in data and "prompt" in data:
            raise _refuse(path, "prompt", "both 'caption' and 'prompt' given; upstream reads 'caption'")
        caption_key = "caption" if "caption" in data else "prompt"
        _think(path, "think", data.get("think", True), strict, notes)  # upstream's loader defaults think to true
        case = {"task": "text2music", "caption": _text(path, caption_key, data.get(caption_key)),
                "lyrics": _text(path, "lyrics", data.get("lyrics")),
                "language": _text(path, "language", data.get("language")) or "unknown",
                "bpm": _int_or_none(path, "bpm", data.get("bpm")),
                "keyscale": _text(path, "keyscale", data.get("keyscale")),
                "timesignature": _text(path, "timesignature", str(data["timesignature"])
                                       if isinstance(data.get("timesignature"), int) else data.get("timesignature")),
                "duration": _float_or_none(path, "duration", data.get("duration"))}
        notes.append(f"seed {seed} and shift {shift} set by the importer (upstream examples carry none)")
    elif fmt == "upstream-simple_mode":
        _check_fields(path, data, UPSTREAM_SIMPLE_FIELDS, fmt)
        instrumental = data.get("instrumental", False)
        if not isinstance(instrumental, bool):
            raise _refuse(path, "instrumental", f"expected true/false, got {instrumental!r}")
        query = _text(path, "description", data.get("description"))
        case = {"task": "simple_mode", "query": query or "NO USER INPUT", "instrumental": instrumental,
                "language": _text(path, "vocal_language", data.get("vocal_language")) or "unknown",
                "duration": None}
        if not query:
            notes.append("description: empty, imported as upstream's 'NO USER INPUT'")
        notes.append(f"seed {seed} and shift {shift} set by the importer (upstream examples carry none)")
    else:
        case = _predecessor(path, data, strict, notes)
        seed = case.pop("seed")
        shift = case.pop("shift")
    case["seeds"] = [seed]
    case["shift"] = shift
    return case, fmt, notes


def _predecessor(path: Path, data: dict, strict: bool, notes: list[str]) -> dict:
    _check_fields(path, data, PREDECESSOR_FIELDS, "predecessor")
    meta = data.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _refuse(path, "metadata", "expected an object")
    for key in meta:
        if key not in PREDECESSOR_METADATA:
            raise _refuse(path, f"metadata.{key}", f"not representable (known: {', '.join(sorted(PREDECESSOR_METADATA))})")
    mode = data.get("mode", "text2music")
    if mode not in ("text2music", "simple_mode"):
        raise _refuse(path, "mode", f"{mode!r}: only text2music and simple_mode are in scope")
    if data.get("infer_method", "ode") != "ode":
        raise _refuse(path, "infer_method", f"{data['infer_method']!r}: only the ODE sampler is in scope "
                                            "(upstream's sde path draws unseeded noise)")
    steps = data.get("inference_steps", 8)
    if steps != 8:
        raise _refuse(path, "inference_steps", f"{steps}: acestep-v15-turbo always runs its 8-step table "
                                               "(upstream ignores infer_steps); use 'timesteps' in the case instead")
    if data.get("deterministic", True) is not True:
        raise _refuse(path, "deterministic", "false cannot be represented: every case is deterministic")
    sampling = data.get("lm_sampling") or {}
    if not isinstance(sampling, dict):
        raise _refuse(path, "lm_sampling", "expected an object")
    temperature = float(sampling.get("temperature", 0.0) or 0.0)
    if temperature != 0.0:
        raise _refuse(path, "lm_sampling.temperature", f"{temperature}: cases run the LM greedily (temperature 0, "
                                                       "the parity mode); sampled LM cases are not representable")
    _think(path, "thinking", data.get("thinking", False), strict, notes)
    fmt = data.get("audio_format", "wav")
    if fmt not in FORMATS:
        raise _refuse(path, "audio_format", f"{fmt!r} is not one of {FORMATS}")
    seed = data.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _refuse(path, "seed", f"{seed!r} is not an integer seed")
    if data.get("lm_model_variant") and mode == "simple_mode":
        notes.append(f"lm_model_variant {data['lm_model_variant']!r}: the LM is the acestep-5Hz-lm-* folder of "
                     "the checkpoint in use")
    if data.get("expected"):
        notes.append("expected: not imported (the golden store holds the reference outputs)")
    case = {"task": mode, "caption": _text(path, "caption", data.get("caption")),
            "lyrics": _text(path, "lyrics", data.get("lyrics")),
            "language": _text(path, "metadata.vocal_language", meta.get("vocal_language")) or "unknown",
            "bpm": _int_or_none(path, "metadata.bpm", meta.get("bpm")),
            "keyscale": _text(path, "metadata.keyscale", meta.get("keyscale")),
            "timesignature": _text(path, "metadata.timesignature", str(meta["timesignature"])
                                   if isinstance(meta.get("timesignature"), int) else meta.get("timesignature")),
            "duration": _float_or_none(path, "metadata.duration", meta.get("duration")),
            "output_format": fmt, "seed": seed, "shift": float(data.get("shift", 3.0))}
    if mode == "simple_mode":
        case["query"] = _text(path, "simple_mode_query", data.get("simple_mode_query"))
        case["instrumental"] = bool(meta.get("instrumental", False))
    elif meta.get("instrumental"):
        notes.append("metadata.instrumental: not used by upstream's text2music generate_music (dropped)")
    return case


def import_file(path: Path, out_dir: Path, *, seed: int = 42, shift: float = 3.0, strict: bool = False,
                prefix: str = "") -> Imported:
    """Convert one file and write ``out_dir/<id>.json``; raises :class:`ImportRefused` naming file and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRefused(f"{path}: not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImportRefused(f"{path}: top level must be a JSON object")
    case, fmt, notes = convert(path, data, seed=seed, shift=shift, strict=strict)
    if fmt == "predecessor":
        case_id = _case_id(str(data.get("case_id", path.stem)))
    elif fmt == "project":
        case_id = str(data["id"])
    else:
        case_id = _case_id(f"{prefix or fmt.split('-', 1)[1]}_{path.stem}")
    case = {"id": case_id, **{k: v for k, v in case.items() if k != "id"}}
    case.setdefault("description", f"imported from {path.name} ({fmt})")
    case = {k: v for k, v in case.items() if v is not None}
    target = out_dir / f"{case_id}.json"
    if target.exists() and target.read_text(encoding="utf-8") != _dump(case):
        raise ImportRefused(f"{path}: would overwrite {target} with a different case (id {case_id!r} twice?)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(_dump(case), encoding="utf-8")
    try:
        load_case(target)
    except CaseError as exc:
        target.unlink()
        raise ImportRefused(f"{path}: converted case is not valid: {exc}") from None
    return Imported(path, target, fmt, notes)


def _dump(case: dict) -> str:
    return json.dumps(case, indent=2, ensure_ascii=False) + "\n"


def import_tree(source: Path, out_dir: Path, **kwargs) -> tuple[list[Imported], list[str]]:
    """Every ``*.json`` under ``source`` (a file or a folder, recursively); ids of upstream examples are prefixed
    with their folder name (``text2music_example_01``). Returns what was imported and what was refused."""
    files = [source] if source.is_file() else sorted(source.rglob("*.json"))
    done, refused = [], []
    for path in files:
        if path.name == "tolerances.json":
            continue
        prefix = path.parent.name if path.parent.name in ("text2music", "simple_mode") else ""
        try:
            done.append(import_file(path, out_dir, prefix=prefix, **kwargs))
        except ImportRefused as exc:
            refused.append(str(exc))
    return done, refused
