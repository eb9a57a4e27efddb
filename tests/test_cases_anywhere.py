"""Cases from anywhere: ``--cases-dir``, ``acestep-parity import-cases`` (upstream examples and the predecessor's
fixtures), a malformed file failing only its own items, and the plugin's options parsed before test paths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_ort.host.case import CaseError, InvalidCase, discover_cases, load_case
from acestep_parity import paths
from acestep_parity.import_cases import ImportRefused, import_file, import_tree

REPO = paths.REPO_ROOT

# Written here in upstream's example format (examples/text2music, examples/simple_mode); not upstream's files.
UPSTREAM_T2M = {
    "example_01.json": {"think": True, "caption": "bright city pop with slap bass and glossy synths",
                        "lyrics": "[Verse]\n夜の街を歩いて\n君を探してた", "bpm": 112, "duration": 3,
                        "keyscale": "E major", "language": "ja", "timesignature": "4"},
    "example_02.json": {"think": False, "caption": "chanson douce, guitare et accordéon", "lyrics": "[Couplet]\nLà-haut",
                        "bpm": "N/A", "duration": 4.2, "keyscale": "", "language": "fr", "timesignature": "N/A"},
    "example_03.json": {"caption": "dark ambient drone", "lyrics": "[Instrumental]", "duration": 3},  # fields missing
}
UPSTREAM_SIMPLE = {
    "example_01.json": {"description": "una canción alegre de verano", "instrumental": False,
                        "vocal_language": "es"},
}
PREDECESSOR = {
    "case01.json": {"case_id": "pred_t2m_01", "mode": "text2music", "seed": 1234, "inference_steps": 8, "shift": 3.0,
                    "infer_method": "ode", "thinking": False, "caption": "lofi beat with rain sounds",
                    "lyrics": "[Instrumental]", "lm_model_variant": "1.7B",
                    "lm_sampling": {"temperature": 0.0, "top_k": 0, "top_p": 1.0},
                    "metadata": {"instrumental": True, "vocal_language": "unknown", "bpm": 80, "keyscale": "C minor",
                                 "timesignature": "4", "duration": 3.0}},
    "case02.json": {"case_id": "pred_simple_01", "mode": "simple_mode", "seed": 7,
                    "simple_mode_query": "a lullaby for a rainy night",
                    "metadata": {"instrumental": False, "vocal_language": "en"}},
}


def _write_tree(root: Path) -> Path:
    for folder, files in (("examples/text2music", UPSTREAM_T2M), ("examples/simple_mode", UPSTREAM_SIMPLE),
                          ("fixtures/cases", PREDECESSOR)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            (root / folder / name).write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    return root


def test_import_cases_both_formats(tmp_path):
    src = _write_tree(tmp_path / "src")
    out = tmp_path / "cases"
    done, refused = import_tree(src, out)
    assert refused == []
    by_id = {item.target.stem: item for item in done}
    assert set(by_id) == {"text2music_example_01", "text2music_example_02", "text2music_example_03",
                          "simple_mode_example_01", "pred_t2m_01", "pred_simple_01"}
    first = load_case(out / "text2music_example_01.json")
    assert (first.task, first.language, first.bpm, first.duration, first.seeds, first.shift) == \
        ("text2music", "ja", 112, 3.0, (42,), 3.0)
    assert any("think: true imported as thinking=False" in n for n in by_id["text2music_example_01"].notes)
    second = load_case(out / "text2music_example_02.json")
    assert (second.bpm, second.keyscale, second.timesignature) == (None, "", "")  # "N/A" and "" are "not given"
    third = load_case(out / "text2music_example_03.json")
    assert (third.language, third.bpm) == ("unknown", None)
    simple = load_case(out / "simple_mode_example_01.json")
    assert (simple.task, simple.query, simple.language, simple.instrumental) == \
        ("simple_mode", "una canción alegre de verano", "es", False)
    pred = load_case(out / "pred_t2m_01.json")
    assert (pred.seeds, pred.keyscale, pred.duration, pred.lyrics) == ((1234,), "C minor", 3.0, "[Instrumental]")
    assert any("metadata.instrumental" in n for n in by_id["pred_t2m_01"].notes)
    assert load_case(out / "pred_simple_01.json").query == "a lullaby for a rainy night"


def test_import_cases_refuses_what_it_cannot_represent(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    cases = {
        "think.json": ({"think": True, "caption": "x", "duration": 5}, "think", {"strict": True}),
        "sde.json": ({"case_id": "a", "mode": "text2music", "infer_method": "sde", "caption": "x"}, "infer_method", {}),
        "steps.json": ({"case_id": "b", "mode": "text2music", "inference_steps": 20, "caption": "x"},
                       "inference_steps", {}),
        "sampled.json": ({"case_id": "c", "mode": "simple_mode", "simple_mode_query": "q",
                          "lm_sampling": {"temperature": 0.85}}, "lm_sampling.temperature", {}),
        "cover.json": ({"case_id": "d", "mode": "cover", "caption": "x"}, "mode", {}),
        "extra.json": ({"caption": "x", "reference_audio": "a.wav"}, "reference_audio", {}),
        "meta.json": ({"case_id": "e", "mode": "text2music", "metadata": {"tempo": 90}}, "metadata.tempo", {}),
        "bpm.json": ({"caption": "x", "bpm": "fast"}, "bpm", {}),
        "long.json": ({"caption": "x", "duration": 900}, "duration", {}),
    }
    for name, (body, field, kwargs) in cases.items():
        path = src / name
        path.write_text(json.dumps(body))
        with pytest.raises(ImportRefused, match=f"{path}.*'{field}'") as info:
            import_file(path, tmp_path / "out", **kwargs)
        assert "Traceback" not in str(info.value)


def test_import_cases_cli_then_pytest_on_the_result(tmp_path, parity_session):
    """The acceptance path: import upstream-format and predecessor-format files, then run the suite on them."""
    src = _write_tree(tmp_path / "src")
    out = tmp_path / "cases"
    proc = subprocess.run([sys.executable, "-m", "acestep_parity.cli", "import-cases", str(src), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 imported, 0 refused" in proc.stdout and "note: think: true imported as thinking=False" in proc.stdout
    strict = subprocess.run([sys.executable, "-m", "acestep_parity.cli", "import-cases", str(src), "--out",
                             str(tmp_path / "strict"), "--strict"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert strict.returncode == 1 and "example_01.json: field 'think'" in strict.stderr
    pytest.importorskip("torch")
    junit = tmp_path / "junit.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_parity.py", "-p", "no:cacheprovider", "-q", "--backend",
         "py_ort", "--cases-dir", str(out), "--case", "text2music_example_0[13]", "--case", "pred_t2m_01",
         "-k", "py_ort and torch and (test_audio or pred_latents or text_token_ids)",
         "--checkpoint-dir", str(parity_session.checkpoint[0]), "--parity-report", str(tmp_path / "reports"),
         f"--junitxml={junit}"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "9 passed" in run.stdout, run.stdout[-2000:]


def test_malformed_case_fails_only_its_own_items(tmp_path, parity_session):
    cases = tmp_path / "cases"
    cases.mkdir()
    good = json.loads((paths.CASES_DIR / "text2music_04.json").read_text())
    shutil.copyfile(paths.CASES_DIR / "text2music_04.json", cases / "text2music_04.json")  # same bytes: golden fits
    (cases / "text2music_98.json").write_text(json.dumps({**good, "id": "text2music_98", "bpm": 1000}))
    found = discover_cases(cases)
    assert [type(c).__name__ for c in found] == ["Case", "InvalidCase"]
    assert isinstance(found[1], InvalidCase) and "'bpm'" in found[1].message
    assert [c.id for c in discover_cases(cases, ["text2music_04"])] == ["text2music_04"]  # the bad one unread
    with pytest.raises(CaseError, match="does not exist"):
        discover_cases(tmp_path / "nowhere")
    pytest.importorskip("torch")
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_parity.py", "-p", "no:cacheprovider", "-q", "--backend",
         "torch", "--cases-dir", str(cases), "-k", "test_audio", "--checkpoint-dir",
         str(parity_session.checkpoint[0]), "--parity-report", str(tmp_path / "reports"), f"--junitxml={junit}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "1 passed" in summary and "1 error" in summary, proc.stdout[-2000:]  # the bad case fails at setup
    assert "text2music_98.json: field 'bpm'" in proc.stdout


def test_plugin_options_are_known_before_test_paths(tmp_path):
    """pytest11 entry point: `--parity-report DIR` with a space names the report folder, not a test path."""
    existing = tmp_path / "reports"
    existing.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--parity-report", str(existing), "--collect-only", "-q",
         "tests/test_host_logic.py", "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "unrecognized arguments" not in proc.stderr
    assert "tests/test_host_logic.py::" in proc.stdout
