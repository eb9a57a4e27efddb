"""A wrong ``--checkpoint-dir`` is one clear message before anything loads: every command that takes one
(``acestep-export``, ``acestep-parity generate``, ``pytest``) names what is missing or malformed and the likely
right folder (the parent of a component subfolder, or a checkpoint below a repository root), and exits 2
(pytest: its usage-error status 4) without a traceback. The check reads configs and safetensors headers only
(``acestep_parity.checkpoint_check.require_checkpoint``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_parity import paths
from acestep_parity.checkpoint import DIT_DIR, CheckpointError
from acestep_parity.checkpoint_check import likely_checkpoint_folder, require_checkpoint


def _linked_copy(source: Path, target: Path) -> Path:
    """``source`` as a tree of symlinks (cheap), with real folders so single files can be replaced."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_dir():
            _linked_copy(item, target / item.name)
        else:
            (target / item.name).symlink_to(item.resolve())
    return target


@pytest.fixture(scope="module")
def synthetic() -> Path:
    return paths.ensure_synthetic_checkpoint("tiny")


def empty(tmp_path: Path, synthetic: Path) -> tuple[Path, str, Path | None]:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder, f"{DIT_DIR}/config.json: missing", None


def component_subfolder(tmp_path: Path, synthetic: Path) -> tuple[Path, str, Path | None]:
    copy = _linked_copy(synthetic, tmp_path / "ckpt")
    return copy / DIT_DIR, "missing", copy


def repository_root(tmp_path: Path, synthetic: Path) -> tuple[Path, str, Path | None]:
    root = tmp_path / "ACE-Step-1.5"
    copy = _linked_copy(synthetic, root / "checkpoints")
    return root, "missing", copy


def empty_config(tmp_path: Path, synthetic: Path) -> tuple[Path, str, Path | None]:
    copy = _linked_copy(synthetic, tmp_path / "ckpt")
    (copy / DIT_DIR / "config.json").unlink()
    (copy / DIT_DIR / "config.json").write_text("{}", encoding="utf-8")
    return copy, f"{DIT_DIR}/config.json: field 'num_hidden_layers' is missing", None


def truncated_weights(tmp_path: Path, synthetic: Path) -> tuple[Path, str, Path | None]:
    copy = _linked_copy(synthetic, tmp_path / "ckpt")
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])
    return copy, "diffusion_pytorch_model.safetensors", None


FOLDERS = {"empty": empty, "component_subfolder": component_subfolder, "repository_root": repository_root,
           "empty_config": empty_config, "truncated_weights": truncated_weights}


@pytest.mark.parametrize("kind", sorted(FOLDERS))
def test_require_checkpoint_names_the_problem_and_the_right_folder(kind, tmp_path, synthetic):
    folder, needle, right = FOLDERS[kind](tmp_path, synthetic)
    with pytest.raises(CheckpointError) as info:
        require_checkpoint(folder)
    message = str(info.value)
    assert message.startswith(f"{folder} is not a usable ACE-Step 1.5 checkpoint folder"), message
    assert needle in message, message
    assert likely_checkpoint_folder(folder) == right
    if right is not None:
        assert f"the checkpoint folder is probably {right}" in message.splitlines()[0]


def test_a_good_checkpoint_passes(synthetic):
    assert require_checkpoint(synthetic) == synthetic


COMMANDS = {
    "acestep-export": lambda d, tmp: [sys.executable, "-m", "acestep_parity.exporters.cli", "--checkpoint-dir",
                                      str(d), "--out", str(tmp / "onnx")],
    "acestep-parity-generate": lambda d, tmp: [sys.executable, "-m", "acestep_parity.cli", "generate",
                                               "--checkpoint-dir", str(d), "--case", "text2music_01", "--out",
                                               str(tmp / "o.wav")],
    "pytest": lambda d, tmp: [sys.executable, "-m", "pytest", "--checkpoint-dir", str(d), "-q", "-p",
                              "no:cacheprovider", str(paths.REPO_ROOT / "tests" / "test_host_logic.py")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["empty_config", "component_subfolder"])
def test_every_command_refuses_in_one_message(kind, command, tmp_path, synthetic, record_property):
    folder, needle, right = FOLDERS[kind](tmp_path, synthetic)
    proc = subprocess.run(COMMANDS[command](folder, tmp_path), capture_output=True, text=True, timeout=300,
                          cwd=paths.REPO_ROOT)
    text = proc.stdout + proc.stderr
    record_property("message", text.strip()[:400])
    assert proc.returncode == (4 if command == "pytest" else 2), text
    assert "Traceback" not in text and needle in text, text
    if right is not None:
        assert f"probably {right}" in text, text
    assert not (tmp_path / "onnx" / "manifest.json").exists() and not (tmp_path / "o.wav").exists()


def test_the_error_lists_at_most_ten_problems(tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text(json.dumps([1]), encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        require_checkpoint(folder)
    lines = str(info.value).splitlines()
    assert len(lines) <= 12 and all(line.startswith("  ") for line in lines[1:]), lines


# ------------------------------------------------------------------------------------------- --onnx-dir


@pytest.fixture(scope="module")
def exported(parity_session) -> Path:
    from parity_test_helpers import backend_or_skip

    return backend_or_skip(parity_session, "py_ort").onnx_dir


def _onnx_run(runtime: str, folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    case = str(paths.CASES_DIR / "text2music_01.json")
    if runtime == "rust":
        from acestep_parity.backends.rust import find_binary, rust_env

        binary = find_binary()
        if binary is None:
            pytest.skip("the Rust runtime is not built (make rust)")
        return subprocess.run([str(binary), "--case", case, "--onnx-dir", str(folder), "--out",
                               str(tmp_path / "o.wav")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env=rust_env())
    return subprocess.run([sys.executable, "-m", "acestep_ort.cli", "generate", "--case", case, "--onnx-dir",
                           str(folder), "--out", str(tmp_path / "o.wav")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("runtime", ["acestep-ort", "rust"])
@pytest.mark.parametrize("kind", ["checkpoint", "artifacts_parent", "empty"])
def test_runtimes_name_the_right_onnx_folder(kind, runtime, exported, synthetic, tmp_path, record_property):
    """``generate --onnx-dir`` (py_ort and Rust, one rule: ``onnx_folder_hint``) given a checkpoint, the parent
    of the export or an empty folder: one line saying what the folder is and where the exported one probably is,
    exit 2."""
    if kind == "checkpoint":
        folder, needle = synthetic, f"is a checkpoint folder, not an exported one: export it first with " \
                                    f"`acestep-export --checkpoint-dir {synthetic}"
    elif kind == "artifacts_parent":
        folder = tmp_path / "artifacts"
        (folder / "some-checkpoint").mkdir(parents=True)
        (folder / "some-checkpoint" / "fp32").symlink_to(exported)
        needle = f"the exported folder is probably {folder / 'some-checkpoint' / 'fp32'}"
    else:
        folder = tmp_path / "nothing"
        folder.mkdir()
        needle = "export with `acestep-export"
    proc = _onnx_run(runtime, folder, tmp_path)
    record_property("message", proc.stderr.strip()[:400])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{folder} is not an exported ONNX folder" in proc.stderr and needle in proc.stderr, proc.stderr
