"""The case-file input contract on the Python side: JSON that is not JSON (NaN / Infinity literals, lone
surrogate escapes), numbers too large for a float, JSON nested too deeply and unreadable paths are refused with
the file (and field) named — by ``load_case``, by ``acestep-ort generate`` (exit 2, one line, no traceback), and
by case discovery, where a malformed file becomes its own failing item instead of ending the session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from acestep_ort.host.case import CaseError, InvalidCase, discover_cases, load_case

BASE = '"id": "{id}", "task": "text2music", "caption": "x", "seeds": [1]'
# id -> (the file's JSON text, the field the refusal names, or None where it names only the file)
CORPUS = {
    "nan_shift": ('{' + BASE + ', "duration": 5, "shift": NaN}', None),
    "neg_inf_duration": ('{' + BASE + ', "duration": -Infinity}', None),
    "huge_int_duration": ('{' + BASE + ', "duration": 1' + "0" * 400 + '}', "duration"),
    "huge_float_shift": ('{' + BASE + ', "duration": 5, "shift": 1e400}', "shift"),
    "huge_timestep": ('{' + BASE + ', "duration": 5, "timesteps": [1e400]}', "timesteps"),
    "lone_surrogate_lyrics": ('{' + BASE + ', "duration": 5, "lyrics": "la \\ud800 la"}', "lyrics"),
    "deep_nesting": ('{' + BASE + ', "duration": 5, "caption": ' + "[" * 100000 + "]" * 100000 + '}', None),
}


def _write(folder: Path, case_id: str) -> Path:
    text, _ = CORPUS[case_id]
    path = folder / f"{case_id}.json"
    path.write_text(text.replace("{id}", case_id), encoding="utf-8")
    return path


@pytest.mark.parametrize("case_id", sorted(CORPUS))
def test_load_case_refuses_with_the_file_and_field(case_id, tmp_path):
    path = _write(tmp_path, case_id)
    with pytest.raises(CaseError) as info:
        load_case(path)
    message = str(info.value)
    field = CORPUS[case_id][1]
    assert message.startswith(str(path)) and "\n" not in message
    if field:
        assert f"field {field!r}" in message, message


def test_a_directory_named_like_a_case(tmp_path):
    (tmp_path / "text2music_77.json").mkdir()
    with pytest.raises(CaseError, match="cannot read the case file"):
        load_case(tmp_path / "text2music_77.json")


def test_discovery_turns_each_malformed_file_into_its_own_item(tmp_path):
    for case_id in CORPUS:
        _write(tmp_path, case_id)
    (tmp_path / "text2music_77.json").mkdir()
    found = discover_cases(tmp_path)
    assert len(found) == len(CORPUS) + 1 and all(isinstance(c, InvalidCase) for c in found)


@pytest.mark.parametrize("case_id", ["nan_shift", "huge_int_duration", "lone_surrogate_lyrics", "deep_nesting"])
def test_runtime_cli_refuses_in_one_line(case_id, tmp_path):
    path = _write(tmp_path, case_id)
    proc = subprocess.run([sys.executable, "-m", "acestep_ort.cli", "generate", "--case", str(path), "--onnx-dir",
                           str(tmp_path), "--out", str(tmp_path / "x.wav")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(path) in proc.stderr and not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("case_id", sorted(CORPUS))
def test_rust_runtime_gives_the_same_verdict(case_id, tmp_path):
    """The Rust ``generate`` refuses the same files, naming the same field (the text2music verdicts of
    ``acestep_core::case`` and ``acestep_ort.host.case`` agree; a huge number used to become 120 s of audio)."""
    from acestep_parity.backends.rust import find_binary

    binary = find_binary()
    if binary is None:
        pytest.skip("the Rust runtime is not built (make rust)")
    path = _write(tmp_path, case_id)
    proc = subprocess.run([str(binary), "--case", str(path), "--onnx-dir", str(tmp_path), "--out",
                           str(tmp_path / "x.wav")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "panicked" not in proc.stderr and str(path) in proc.stderr and not (tmp_path / "x.wav").exists()
    field = CORPUS[case_id][1]
    if field and field != "lyrics":  # serde_json refuses a lone surrogate while parsing (no field to name)
        assert f"field '{field}'" in proc.stderr, proc.stderr
