"""The minimal ORT runtime: torch-free, deterministic, clear errors, declared dependency set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from parity_test_helpers import TORCH_BLOCKER, backend_or_skip

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (test extra)
    import tomli as tomllib

from acestep_ort.host.case import load_case
from acestep_parity import paths

RUN_CASE = TORCH_BLOCKER + """
import json, sys
import numpy as np
from pathlib import Path
from acestep_ort.host.case import load_case
from acestep_ort import load_engine
engine = load_engine(Path(sys.argv[1]))
caps = engine.generate(load_case(Path(sys.argv[2])).request())
np.savez(sys.argv[3], **caps.arrays)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "diffusers"))
print(json.dumps({"heavy_modules": loaded}))
"""


@pytest.fixture(scope="module")
def ort_backend(parity_session):
    return backend_or_skip(parity_session, "py_ort")


def test_runtime_dependency_set_is_minimal():
    """The runtime distribution (runtimes/py_ort) declares exactly the four runtime packages; the framework's base
    dependency is the runtime and nothing heavier (torch & co. live behind extras)."""
    project = tomllib.loads((paths.REPO_ROOT / "runtimes" / "py_ort" / "pyproject.toml").read_text())["project"]
    names = {dep.split("=")[0].split("<")[0].split(">")[0].strip().lower() for dep in project["dependencies"]}
    assert names == {"numpy", "onnxruntime", "tokenizers", "soundfile"}
    framework = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert framework["dependencies"] == [f"acestep-ort=={project['version']}"]


def test_full_case_with_torch_blocked(ort_backend, tmp_path, record_property):
    out = tmp_path / "caps.npz"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CASE, str(ort_backend.onnx_dir), str(paths.CASES_DIR / "text2music_02.json"),
         str(out)], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["heavy_modules"] == []
    with np.load(out) as data:
        blocked_run = {k: data[k] for k in data.files}
    in_process = ort_backend.run_case(load_case(paths.CASES_DIR / "text2music_02.json"))
    for name in ("noise", "vt", "pred_latents", "audio"):
        assert np.array_equal(blocked_run[name], in_process[name]), f"{name} differs in the torch-blocked process"
    record_property("audio_samples", int(blocked_run["audio"].shape[-1]))


def test_same_case_twice_is_identical(ort_backend):
    from acestep_ort import load_engine

    engine = load_engine(ort_backend.onnx_dir)
    request = load_case(paths.CASES_DIR / "text2music_04.json").request()
    first, second = engine.generate(request), engine.generate(request)
    for name, array in first.arrays.items():
        assert np.array_equal(array, second[name]), f"{name} differs between two identical runs"


def test_missing_graph_is_a_clear_error(ort_backend, tmp_path):
    import shutil

    from acestep_ort import load_engine
    from acestep_ort.session_manager import GraphContractError

    broken = tmp_path / "onnx"
    shutil.copytree(ort_backend.onnx_dir, broken)
    (broken / "dit_decoder.onnx").unlink()
    with pytest.raises(GraphContractError, match="dit_decoder.onnx"):
        load_engine(broken)


def test_graph_not_matching_contract_is_a_clear_error(ort_backend, tmp_path):
    import shutil

    from acestep_ort import load_engine
    from acestep_ort.session_manager import GraphContractError

    broken = tmp_path / "onnx"
    shutil.copytree(ort_backend.onnx_dir, broken)
    shutil.copyfile(broken / "lyric_embedding.onnx", broken / "vae_decoder.onnx")  # wrong graph in place
    with pytest.raises(GraphContractError, match=r"vae_decoder\.onnx is [0-9]+ bytes"):
        load_engine(broken)  # the digests see it first
    manifest = json.loads((broken / "manifest.json").read_text(encoding="utf-8"))
    manifest["graphs"]["vae_decoder"]["files"] = manifest["graphs"]["lyric_embedding"]["files"][:1]
    manifest["graphs"]["vae_decoder"]["files"][0] = {**manifest["graphs"]["vae_decoder"]["files"][0],
                                                     "file": "vae_decoder.onnx"}
    (broken / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(GraphContractError, match="vae_decoder.onnx inputs"):
        load_engine(broken)  # listed as it is now: the I/O contract refuses it


def test_wrong_feed_is_a_clear_error(ort_backend):
    from acestep_ort import load_engine
    from acestep_ort.session_manager import GraphContractError

    engine = load_engine(ort_backend.onnx_dir)
    with pytest.raises(GraphContractError, match="must be float32"):
        engine.sessions.run("vae_decoder", {"latents": np.zeros((1, 64, 8), dtype=np.float64)})
    with pytest.raises(GraphContractError, match="expects inputs"):
        engine.sessions.run("vae_decoder", {"z": np.zeros((1, 64, 8), dtype=np.float32)})


def test_cli_generates_audio_and_dump(ort_backend, tmp_path):
    import soundfile as sf

    out = tmp_path / "song.flac"
    dump = tmp_path / "caps.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "acestep_ort.cli", "generate", "--case", str(paths.CASES_DIR / "text2music_04.json"),
         "--onnx-dir", str(ort_backend.onnx_dir), "--out", str(out), "--dump", str(dump)],
        cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, rate = sf.read(out, always_2d=True)
    assert rate == 48000 and data.shape == (128 * 1920, 2)
    assert "dit [" in proc.stderr and "timings:" in proc.stdout
    with np.load(dump) as caps:
        assert caps["vt"].shape == (8, 1, 128, 64)


def test_cli_rejects_malformed_case(ort_backend, tmp_path):
    bad = tmp_path / "text2music_99.json"
    bad.write_text(json.dumps({"id": "text2music_99", "task": "text2music", "caption": "x", "duration": 900,
                               "seeds": [1]}))
    proc = subprocess.run(
        [sys.executable, "-m", "acestep_ort.cli", "generate", "--case", str(bad), "--onnx-dir",
         str(ort_backend.onnx_dir), "--out", str(tmp_path / "x.wav")],
        cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "duration" in proc.stderr and str(bad) in proc.stderr


def test_malformed_case_messages(tmp_path):
    from acestep_ort.host.case import CaseError

    def write(obj) -> Path:
        path = tmp_path / f"{obj.get('id', 'text2music_98')}.json"
        path.write_text(json.dumps(obj))
        return path

    base = {"id": "text2music_98", "task": "text2music", "caption": "x", "duration": 5.0, "seeds": [1]}
    with pytest.raises(CaseError, match="'colour'.*unknown field"):
        load_case(write({**base, "colour": "red"}))
    with pytest.raises(CaseError, match="'duration'.*expected"):
        load_case(write({**base, "duration": "5"}))
    with pytest.raises(CaseError, match="'duration'.*out of range"):
        load_case(write({**base, "duration": 600.5}))
    # Upstream's "no duration" (GenerationParams.duration = -1) and its empty default caption are accepted.
    for no_duration in ({"duration": -1}, {"duration": 0}, {"duration": None}, {}):
        case = {k: v for k, v in base.items() if k != "duration"} | no_duration | {"caption": ""}
        assert load_case(write(case)).duration is None
    with pytest.raises(CaseError, match="'seeds'"):
        load_case(write({**base, "seeds": [-1]}))
    with pytest.raises(CaseError, match="'bpm'"):
        load_case(write({**base, "bpm": True}))


def test_cli_runs_simple_mode_and_finds_the_exported_folder(ort_backend, tmp_path):
    """``acestep-ort generate`` on a simple_mode case with no ``--onnx-dir``: it finds the suite's export as the Rust
    ``generate`` does (newest ``.cache/artifacts/*/fp32``, or ``$ACESTEP_PARITY_CACHE``), runs the planner and
    text2music, and its dump equals the py_ort backend's captures exactly."""
    import os

    case_path = paths.CASES_DIR / "simple_mode_01.json"
    dump = tmp_path / "caps.npz"
    env = {**os.environ, "ACESTEP_PARITY_CACHE": str(ort_backend.onnx_dir.parents[2])}
    env.pop("ACESTEP_ONNX_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "acestep_ort.cli", "generate", "--case", str(case_path), "--out",
                           str(tmp_path / "song.wav"), "--dump", str(dump), "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "using the exported ONNX folder" in proc.stderr and (tmp_path / "song.wav").is_file()
    expected = ort_backend.run_case(load_case(case_path))
    with np.load(dump) as caps:
        assert sorted(caps.files) == sorted(expected.arrays)
        for name in caps.files:
            assert np.array_equal(caps[name], expected[name]), f"{name}: the CLI differs from the backend"


def test_cli_names_a_missing_onnx_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "acestep_ort.cli", "generate", "--case",
                           str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(tmp_path / "onnx"),
                           "--out", str(tmp_path / "x.wav")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"ONNX folder {tmp_path / 'onnx'} does not exist" in proc.stderr and ".cache/artifacts" in proc.stderr
