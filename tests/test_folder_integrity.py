"""A damaged exported folder is refused, never run: every file ``manifest.json`` lists is checked against its
size and SHA-256 when a runtime loads the folder (``acestep_ort.host.digests``, ``acestep_core::digests``; the
verdict is recorded in ``.acestep-digests.json`` so an unchanged folder is not hashed twice), and no runtime
writes non-finite audio. Each damage is tried on the three runtimes a user runs: ``acestep-ort generate``, the
Rust ``generate`` and the Python C-ABI host (``examples/ffi/python``): exit 2, one clear line naming the file,
no traceback or panic, and no audio written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from parity_test_helpers import backend_or_skip

from acestep_ort.hashing import sha256_file
from acestep_ort.host import audio as audio_post
from acestep_ort.host.digests import RECORD, DigestError, listed_files, verify_folder
from acestep_parity import paths

CASE = paths.CASES_DIR / "text2music_04.json"
EXAMPLE_HOST = paths.REPO_ROOT / "examples" / "ffi" / "python" / "acestep_ffi.py"


# ------------------------------------------------------------------------------------------- the rule itself


def _folder(tmp_path: Path, content: bytes = b"graph bytes") -> tuple[Path, dict]:
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "g.onnx").write_bytes(content)
    (folder / "tok.json").write_text("{}", encoding="utf-8")
    manifest = {
        "graphs": {"g": {"files": [{"file": "g.onnx", "sha256": sha256_file(folder / "g.onnx"),
                                    "bytes": len(content)}]}},
        "assets": {"tok.json": {"file": "tok.json", "sha256": sha256_file(folder / "tok.json"), "bytes": 2}},
    }
    return folder, manifest


def test_listed_files_are_the_asked_graphs_and_every_asset(tmp_path):
    _, manifest = _folder(tmp_path)
    assert [f.file for f in listed_files(manifest)] == ["g.onnx", "tok.json"]
    assert [f.file for f in listed_files(manifest, ("other",))] == ["tok.json"]
    assert listed_files(manifest)[0].where == "graphs.g.files[0]"


def test_a_folder_is_hashed_once_then_the_record_vouches(tmp_path):
    folder, manifest = _folder(tmp_path)
    assert verify_folder(folder, manifest) == 2
    assert json.loads((folder / RECORD).read_text(encoding="utf-8"))["g.onnx"]["sha256"] == \
        manifest["graphs"]["g"]["files"][0]["sha256"]
    assert verify_folder(folder, manifest) == 0


def test_a_changed_byte_is_found_even_behind_the_record(tmp_path):
    folder, manifest = _folder(tmp_path)
    verify_folder(folder, manifest)
    (folder / "g.onnx").write_bytes(b"graph bytez")  # same size: only the digest tells
    with pytest.raises(DigestError, match=r"g\.onnx: SHA-256 .* does not match manifest\.json graphs\.g\.files\[0\]"):
        verify_folder(folder, manifest)


def test_a_wrong_size_and_a_missing_file_are_named(tmp_path):
    folder, manifest = _folder(tmp_path)
    (folder / "g.onnx").write_bytes(b"graph")
    with pytest.raises(DigestError, match=r"g\.onnx is 5 bytes, manifest\.json graphs\.g\.files\[0\] says 11"):
        verify_folder(folder, manifest)
    (folder / "g.onnx").unlink()
    with pytest.raises(DigestError, match=r"g\.onnx is missing"):
        verify_folder(folder, manifest)


def test_an_edited_digest_is_refused(tmp_path):
    folder, manifest = _folder(tmp_path)
    verify_folder(folder, manifest)
    manifest["assets"]["tok.json"]["sha256"] = "0" * 64  # the record holds the old digest: it must not vouch
    with pytest.raises(DigestError, match=r"tok\.json: SHA-256 .* assets\.tok\.json"):
        verify_folder(folder, manifest)


def test_a_read_only_folder_is_still_verified(tmp_path):
    folder, manifest = _folder(tmp_path)
    folder.chmod(0o555)
    try:
        assert verify_folder(folder, manifest) == 2
        assert not (folder / RECORD).exists() or verify_folder(folder, manifest) == 0
    finally:
        folder.chmod(0o755)


def test_the_record_is_written_beside_the_folder_whatever_the_temp_dir(tmp_path, monkeypatch):
    import tempfile

    folder, manifest = _folder(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))  # the system's is not used
    assert verify_folder(folder, manifest) == 2
    assert verify_folder(folder, manifest) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(["g.onnx", "tok.json", RECORD])  # no temporary left


def test_a_record_that_cannot_be_renamed_into_place_is_dropped(tmp_path, monkeypatch):
    from acestep_ort.host import digests

    folder, manifest = _folder(tmp_path)

    def refuse(*_):
        raise OSError("read-only")

    monkeypatch.setattr(digests.os, "replace", refuse)
    assert verify_folder(folder, manifest) == 2  # best effort: verified, nothing raised
    assert sorted(p.name for p in folder.iterdir()) == ["g.onnx", "tok.json"]  # and its temporary file removed


def test_listed_files_skips_what_it_cannot_check_and_reads_asset_defaults(tmp_path):
    _, manifest = _folder(tmp_path)
    manifest["graphs"] = {"other": {"files": [{"file": "o.onnx", "sha256": "0" * 64}]}, **manifest["graphs"]}
    manifest["graphs"]["g"]["files"] += ["not a dict", {"file": "no-digest.onnx"}]
    manifest["assets"]["vocab.txt"] = {"sha256": "1" * 64, "bytes": 7}  # no "file": the asset's name is its file
    manifest["assets"]["broken"] = {"file": "b.bin"}  # no digest: nothing to check against
    manifest["assets"]["tokenizer"] = {"file": "tokenizer/t.json", "sha256": "2" * 64}  # named apart from its file
    listed = listed_files(manifest, ("g",))  # a graph not asked for comes first: the others are still listed
    assert [(f.file, f.bytes, f.where) for f in listed] == [
        ("g.onnx", 11, "graphs.g.files[0]"), ("tok.json", 2, "assets.tok.json"), ("vocab.txt", 7, "assets.vocab.txt"),
        ("tokenizer/t.json", None, "assets.tokenizer")]


def test_verify_folder_checks_only_the_graphs_asked_for(tmp_path):
    folder, manifest = _folder(tmp_path)
    manifest["graphs"]["h"] = {"files": [{"file": "h.onnx", "sha256": "0" * 64, "bytes": 1}]}  # not exported here
    assert verify_folder(folder, manifest, ("g",)) == 2
    with pytest.raises(DigestError, match=r"h\.onnx is missing \(manifest\.json graphs\.h\.files\[0\] lists it\); "
                                          r"re-export the folder with `acestep-export`$"):
        verify_folder(folder, manifest)


def test_the_record_is_rewritten_only_when_something_was_hashed(tmp_path):
    folder, manifest = _folder(tmp_path)
    verify_folder(folder, manifest)
    before = (folder / RECORD).stat()
    assert verify_folder(folder, manifest) == 0
    after = (folder / RECORD).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_record_that_is_not_an_object_is_ignored(tmp_path):
    folder, manifest = _folder(tmp_path)
    (folder / RECORD).write_text("[1, 2]", encoding="utf-8")
    assert verify_folder(folder, manifest) == 2
    assert verify_folder(folder, manifest) == 0


def test_digest_messages_say_how_to_repair(tmp_path):
    folder, manifest = _folder(tmp_path)
    (folder / "g.onnx").write_bytes(b"graph")
    with pytest.raises(DigestError, match=r"says 11: the file is damaged or truncated; re-export the folder with "
                                          r"`acestep-export`$"):
        verify_folder(folder, manifest)
    (folder / "g.onnx").write_bytes(b"graph bytez")
    with pytest.raises(DigestError, match=r"\): the file is damaged or the manifest was edited; re-export the folder "
                                          r"with `acestep-export`$"):
        verify_folder(folder, manifest)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_refused(bad):
    audio = np.zeros((1, 2, 100), np.float32)
    assert audio_post.check_finite(audio, "x") is audio
    audio[0, 1, 7] = bad
    with pytest.raises(audio_post.NonFiniteAudioError, match=r"^x returned 1 non-finite samples of 200 \(NaN or "
                       r"infinity\): the graph is damaged or the decode failed; no audio written$"):
        audio_post.check_finite(audio, "x")


# ------------------------------------------------------------------------------------------- the runtimes


def _copy(onnx_dir: Path, target: Path) -> Path:
    """A real copy (bytes are changed in it), without the source folder's record."""
    shutil.copytree(onnx_dir, target, ignore=shutil.ignore_patterns(RECORD))
    return target


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def flip_byte(folder: Path) -> str:
    path = folder / "dit_decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "dit_decoder.onnx"


def truncate_graph(folder: Path) -> str:
    path = folder / "vae_decoder.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "vae_decoder.onnx"


def edit_digest(folder: Path) -> str:
    manifest = _manifest(folder)
    entry = manifest["graphs"]["condition_encoder"]["files"][0]
    entry["sha256"] = ("f" if entry["sha256"][0] != "f" else "e") + entry["sha256"][1:]
    manifest["graphs"]["condition_encoder"]["sha256"] = entry["sha256"]
    _write_manifest(folder, manifest)
    return "condition_encoder.onnx"


def nan_vae(folder: Path) -> str:
    """A VAE that loads and runs but returns NaN (one weight set to NaN, the manifest re-listed to match): the
    digests pass, so only the finite-audio rule can stop it."""
    import onnx
    from onnx import numpy_helper

    path = folder / "vae_decoder.onnx"
    model = onnx.load(str(path), load_external_data=True)
    largest = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                  key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[0] = np.nan
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    for stale in folder.glob("vae_decoder.onnx.data"):
        stale.unlink()
    onnx.save(model, str(path))
    manifest = _manifest(folder)
    record = manifest["graphs"]["vae_decoder"]
    record["files"] = [{"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}]
    record["sha256"] = record["files"][0]["sha256"]
    _write_manifest(folder, manifest)
    return "non-finite samples"


DAMAGE = {"flipped_byte": flip_byte, "truncated_graph": truncate_graph, "edited_digest": edit_digest,
          "nan_vae": nan_vae}
ENTRY_POINTS = ("acestep-ort", "rust", "ffi-python")


@pytest.fixture(scope="module")
def exported(parity_session) -> Path:
    return backend_or_skip(parity_session, "py_ort").onnx_dir


def _command(entry: str, folder: Path, out: Path) -> tuple[list[str], dict | None]:
    if entry == "acestep-ort":
        return [sys.executable, "-m", "acestep_ort.cli", "generate", "--case", str(CASE), "--onnx-dir", str(folder),
                "--out", str(out)], None
    if entry == "rust":
        from acestep_parity.backends.rust import find_binary, rust_env

        binary = find_binary()
        if binary is None:
            pytest.skip("the Rust runtime is not built (make rust)")
        return [str(binary), "--case", str(CASE), "--onnx-dir", str(folder), "--out", str(out)], rust_env()
    from acestep_parity.backends.dll import find_library

    library = find_library()
    if library is None:
        pytest.skip("libacestep_runtime.so is not built (make rust)")
    return [sys.executable, str(EXAMPLE_HOST), "--onnx-dir", str(folder), "--case", str(CASE), "--out", str(out),
            "--lib", str(library)], None


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_folder_is_refused(exported, damage, entry, tmp_path, record_property):
    folder = _copy(exported, tmp_path / "onnx")
    needle = DAMAGE[damage](folder)
    out = tmp_path / "out.wav"
    command, env = _command(entry, folder, out)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    record_property("stderr", proc.stderr.strip()[-400:])
    assert proc.returncode == 2, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert needle in last, proc.stderr
    assert not out.exists(), "audio was written from a damaged folder"


def test_the_record_serves_both_languages(exported, tmp_path):
    """Python verifies and records; the Rust runtime then trusts the record (it rewrites it only when it had to
    hash a file), and the good copy generates."""
    from acestep_parity.backends.rust import find_binary, rust_env

    folder = _copy(exported, tmp_path / "onnx")
    assert verify_folder(folder, _manifest(folder)) == len(listed_files(_manifest(folder)))
    before = (folder / RECORD).stat().st_mtime_ns
    binary = find_binary()
    if binary is None:
        pytest.skip("the Rust runtime is not built (make rust)")
    proc = subprocess.run([str(binary), "--case", str(CASE), "--onnx-dir", str(folder), "--out",
                           str(tmp_path / "o.wav")], capture_output=True, text=True, timeout=600, env=rust_env())
    assert proc.returncode == 0, proc.stderr
    assert (folder / RECORD).stat().st_mtime_ns == before, "the Rust runtime hashed files the record vouched for"
    assert verify_folder(folder, _manifest(folder)) == 0
