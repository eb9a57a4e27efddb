"""The Rust ORT runtime (``rust/``, the ``generate`` binary): exact parity with py_ort, tokens, files, errors.

``rust~py_ort`` compares two runs of the same graphs on the same ``libonnxruntime`` with the same session
options, so every gate in ``cases/tolerances.json`` for that pair is 0: any difference is a host-logic bug.
The per-tensor and per-step gates of the pair run in ``tests/test_parity.py`` (the live matrix); this file
adds the full capture set, tokenization, files, errors and the benchmark row.
The Rust host logic is also held to the Python one by the shared vectors of ``rust/acestep-core/tests/vectors``
(read by ``cargo test``); :func:`test_rust_vectors_are_current` keeps them in step with Python and torch.
Tests that need the binary skip, saying how to build it, where it is not built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from parity_test_helpers import backend_or_skip

from acestep_ort.hashing import sha256_file
from acestep_ort.host import prompts
from acestep_ort.host.digests import RECORD
from acestep_parity import paths, rust_vectors
from acestep_parity.backends.rust import find_binary, rust_env

PAIR = "rust~py_ort"
LM_CAPTURES = ("lm_prompt_ids", "lm_tokens", "lm_logits", "lm_topk_ids", "lm_topk_logits", "lm_allowed",
               "lm_mask_digests", "lm_margins", "lm_text", "lm_metadata")
CAPTURES = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "schedule",
    "noise", "xt", "vt", "pred_latents", "audio_decoded", "audio",
)


def test_rust_vectors_are_current():
    """The committed vectors equal what Python (and torch, for noise.json) produce now."""
    try:
        import torch  # noqa: F401

        with_noise = True
    except ImportError:
        with_noise = False
    stale = []
    for name, data in rust_vectors.build(with_noise=with_noise).items():
        path = rust_vectors.VECTORS_DIR / name
        if not path.is_file() or path.read_text(encoding="utf-8") != rust_vectors.render(data):
            stale.append(name)
    assert not stale, f"stale Rust test vectors {stale}: run `python -m acestep_parity.rust_vectors` and commit"


def test_noise_vectors_cover_the_issue_seeds_and_sizes():
    data = json.loads((rust_vectors.VECTORS_DIR / "noise.json").read_text(encoding="utf-8"))
    seeds = {item["seed"] for item in data["small"]}
    assert seeds == {0, 42, 2**32 - 1, 2**63 - 1}
    sizes = {item["numel"] for item in data["small"]}
    assert min(sizes) < 16 and 16 in sizes and max(sizes) > 16
    assert max(item["numel"] for item in data["large"]) == 15000 * 64


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rust(parity_session):
    return backend_or_skip(parity_session, "rust")


@pytest.fixture(scope="module")
def py_ort(parity_session):
    from acestep_parity.backends import REGISTRY

    if "py_ort" not in REGISTRY:
        pytest.skip("py_ort backend not registered")
    backend = parity_session.backend("py_ort", "fp32")
    availability = backend.availability()
    if not availability.ok:
        pytest.skip(f"backend py_ort unavailable: {availability.reason}")
    return backend


@pytest.fixture(scope="module")
def binary(rust) -> Path:
    return rust.binary


@pytest.fixture(scope="module")
def harness(rust) -> Path:
    """The test-protocol binary (serve, dit-step, vae-decode, tokenize, info); ``generate`` is the user CLI."""
    return rust.harness


@pytest.fixture(scope="module")
def onnx_dir(rust) -> Path:
    return rust.onnx_dir


def _run(binary: Path, *args: str, env: dict | None = None, stdin: str | None = None, cwd: Path | None = None):
    return subprocess.run([str(binary), *args], capture_output=True, text=True, input=stdin, timeout=600,
                          env=env if env is not None else rust_env(), cwd=cwd or paths.REPO_ROOT)


# ------------------------------------------------------------------------------------------- parity


def test_dump_matches_py_ort_captures(rust, py_ort, case, runnable_case, check, profile="fp32"):
    """The dump holds every capture under Python's names, dtypes and shapes, bit-identical to py_ort.

    ``tests/test_parity.py`` gates the ``rust~py_ort`` pair per tensor and per step (teacher-forced and free);
    this adds what it does not cover: the full name/dtype/shape set and ``audio_decoded`` (the VAE output
    before anti-clipping and normalisation); for simple_mode cases also every LM capture (token stream, raw
    logits of every step, allowed masks and digests, margins, text, metadata).
    """
    ours, ref = rust.run_case(runnable_case).arrays, py_ort.run_case(runnable_case).arrays
    names = CAPTURES + (LM_CAPTURES if runnable_case.task == "simple_mode" else ())
    assert list(ours) == list(ref) == list(names)
    for name in names:
        assert ours[name].dtype == ref[name].dtype and ours[name].shape == ref[name].shape, name
    different = [name for name in names if not np.array_equal(ours[name], ref[name])]
    check(ref["audio_decoded"], ours["audio_decoded"], tensor="audio_decoded", pair=PAIR, profile=profile, case=case)
    if runnable_case.task == "simple_mode":  # free-running full-vocabulary LM logits of every step: exact
        check(ref["lm_logits"], ours["lm_logits"], tensor="lm_logits", pair=PAIR, profile=profile, case=case)
    assert not different, f"rust~py_ort differs in {different}"


def test_dit_step_subcommand_equals_serve(rust, py_ort, harness, onnx_dir, tmp_path):
    """The one-shot ``dit-step`` subcommand gives the same vt as the long-lived server."""
    from acestep_ort.host.case import load_case

    ref = py_ort.run_case(load_case(paths.CASES_DIR / "text2music_02.json"))
    t = np.full((ref["xt"].shape[1],), ref["schedule"][5], dtype=np.float32)
    np.savez(tmp_path / "in.npz", hidden_states=ref["xt"][5], timestep=t,
             encoder_hidden_states=ref["encoder_hidden_states"], context_latents=ref["context_latents"])
    proc = _run(harness, "dit-step", "--onnx-dir", str(onnx_dir), "--inputs", str(tmp_path / "in.npz"),
                "--out", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        vt = out["vt"]
    assert np.array_equal(vt, ref["vt"][5])
    assert np.array_equal(vt, rust.dit_step(ref["xt"][5], t, ref["encoder_hidden_states"], ref["context_latents"]))


# ------------------------------------------------------------------------------------------- tokens

LONG_CAPTION = " ".join(["warm analog synth pads with shimmering arpeggios"] * 60)
LONG_LYRICS = "\n".join(f"[verse {i}]\nla la la, the night is young, 夜空に光る星 {i}" for i in range(400))
TOKEN_TEXTS = [
    "", " ", "plain text", "<|endoftext|>", "a<|endoftext|>b<|endoftext|>", "<|im_start|>user\nhi<|im_end|>",
    "<|endof", "<|endoftext|", "|>", "caf\u00e9 vs cafe\u0301 (NFC)", "emoji \U0001f3b5\U0001f3b6 and \u00a0nbsp",
    "tabs\tnewlines\n\n\r\nend", "ÀÉÎÕÜ ñ ß ﬁ", "数字123 and ２３４", LONG_CAPTION, LONG_LYRICS,
]


def test_token_ids_equal_python(harness, onnx_dir):
    """Token ids from the Rust tokenizer equal Python's for special-token strings, Unicode, truncation."""
    from acestep_ort.host.tokenizer import TextTokenizer

    tok = TextTokenizer(onnx_dir / "tokenizer.json", onnx_dir / "tokenizer_config.json")
    items = []
    for text in TOKEN_TEXTS:
        for max_length in (prompts.TEXT_MAX_TOKENS, prompts.LYRIC_MAX_TOKENS, 8):
            items.append({"text": text, "max_length": max_length})
    from acestep_ort.host.case import discover_cases

    for case in discover_cases(paths.CASES_DIR):
        if case.task != "text2music":
            continue
        metas = prompts.metas_string(case.bpm, case.keyscale, case.timesignature, case.duration)
        items.append({"text": prompts.caption_prompt(case.caption, metas), "max_length": prompts.TEXT_MAX_TOKENS})
        items.append({"text": prompts.lyric_prompt(case.lyrics, case.language), "max_length": prompts.LYRIC_MAX_TOKENS})
        items.append({"text": prompts.lyric_prompt(LONG_LYRICS, case.language), "max_length": prompts.LYRIC_MAX_TOKENS})
    proc = _run(harness, "tokenize", "--onnx-dir", str(onnx_dir), stdin=json.dumps(items))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["pad_id"] == tok.pad_id
    truncated = 0
    for item, ids in zip(items, result["ids"], strict=True):
        want = tok.encode(item["text"], item["max_length"]).tolist()
        assert ids == want, f"{item['text'][:60]!r} max_length={item['max_length']}"
        truncated += len(ids) == item["max_length"]
    assert truncated >= 3, "the long texts must exercise truncation"


# ------------------------------------------------------------------------------------------- files


def test_onnx_folder_has_a_python_free_silence_latent(onnx_dir):
    """``silence_latent.npy`` is the ``.pt`` array, and the manifest lists every asset with its SHA-256."""
    from acestep_ort.hashing import sha256_file
    from acestep_ort.host.torch_file import load_tensor

    npy = np.load(onnx_dir / "silence_latent.npy", allow_pickle=False)
    pt = load_tensor(onnx_dir / "silence_latent.pt")
    assert npy.dtype == np.float32 and npy.shape == pt.shape and np.array_equal(npy, pt)
    manifest = json.loads((onnx_dir / "manifest.json").read_text(encoding="utf-8"))
    for name in ("silence_latent.npy", "silence_latent.pt", "tokenizer.json", "tokenizer_config.json"):
        record = manifest["assets"][name]
        assert record["sha256"] == sha256_file(onnx_dir / name) and record["bytes"] == (onnx_dir / name).stat().st_size


def test_audio_files_hold_the_audio_capture(binary, onnx_dir, tmp_path):
    """wav is the float32 audio capture exactly; flac holds the same 16-bit samples as py_ort's flac (soundfile /
    libsndfile: x·32768, ties to even, clipped); progress and timings are shown."""
    import soundfile as sf

    from acestep_ort.host.audio import save_audio

    case = paths.CASES_DIR / "text2music_02.json"  # batch 2: one file per item
    proc = _run(binary, "--case", str(case), "--onnx-dir", str(onnx_dir), "--out", str(tmp_path / "a.wav"),
                "--dump", str(tmp_path / "caps.npz"))
    assert proc.returncode == 0, proc.stderr
    assert "timings:" in proc.stdout and "Session::run" in proc.stdout and "onnxruntime 1." in proc.stderr
    with np.load(tmp_path / "caps.npz") as caps:
        audio = caps["audio"]
    for b in range(audio.shape[0]):
        data, rate = sf.read(tmp_path / f"a_{b}.wav", dtype="float32", always_2d=True)
        assert rate == 48000 and np.array_equal(data.T, audio[b])
    proc = _run(binary, "--case", str(case), "--onnx-dir", str(onnx_dir), "--out", str(tmp_path / "a.flac"),
                "--quiet")
    assert proc.returncode == 0, proc.stderr
    for b in range(audio.shape[0]):
        data, rate = sf.read(tmp_path / f"a_{b}.flac", dtype="int16", always_2d=True)
        expected, _ = sf.read(save_audio(tmp_path / f"py_{b}.flac", audio[b]), dtype="int16", always_2d=True)
        assert rate == 48000 and data.shape == expected.shape
        differ = int(np.count_nonzero(data != expected))
        assert differ == 0, f"{differ} of {data.size} flac samples differ from py_ort's"


# ------------------------------------------------------------------------------------------- errors


def _assert_clean_error(proc, *needles: str) -> None:
    """One line ``<binary>: error: ...`` (``generate`` or ``acestep-harness``), exit code 2, no panic."""
    assert proc.returncode not in (0, 101), proc.stdout
    assert "panicked" not in proc.stderr and "backtrace" not in proc.stderr.lower(), proc.stderr
    assert proc.stderr.startswith(f"{Path(proc.args[0]).name}: error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _folder_copy(onnx_dir: Path, target: Path) -> Path:
    """A copy of the ONNX folder made of symlinks (cheap), so single files can be swapped or removed."""
    target.mkdir()
    for item in onnx_dir.iterdir():
        if item.name != RECORD:  # the digest record is the folder's own (written where it is verified)
            (target / item.name).symlink_to(item)
    return target


def _relist(folder: Path, graph: str, source: Path) -> None:
    """Make ``folder``'s manifest list ``source``'s bytes for ``graph`` (a swapped graph that passes the digest
    check, so the I/O contract is what refuses it)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    digest = sha256_file(source)
    manifest["graphs"][graph]["files"] = [{"file": f"{graph}.onnx", "sha256": digest,
                                           "bytes": source.stat().st_size}]
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_error_missing_dylib(binary, onnx_dir, tmp_path):
    env = {**os.environ, "ORT_DYLIB_PATH": str(tmp_path / "libonnxruntime.so.1.23.2")}
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(onnx_dir),
                "--out", str(tmp_path / "o.wav"), env=env)
    _assert_clean_error(proc, "ORT_DYLIB_PATH", str(tmp_path / "libonnxruntime.so.1.23.2"), "does not exist")


def test_error_no_dylib_anywhere(binary, harness, onnx_dir, tmp_path):
    """Nothing found: the message lists where it looked and what to do (the user CLI and the harness alike)."""
    (tmp_path / "bin").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "VIRTUAL_ENV")}
    for built, args in ((binary, ["--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(onnx_dir),
                                  "--out", str(tmp_path / "o.wav")]),
                        (harness, ["info"])):
        alone = tmp_path / "bin" / built.name
        shutil.copy2(built, alone)
        proc = _run(alone, *args, env=env, cwd=tmp_path)
        _assert_clean_error(proc, "no ONNX Runtime library found", "ORT_DYLIB_PATH")
    assert not (tmp_path / "o.wav").exists()


def test_error_graph_not_matching_the_contract(binary, onnx_dir, tmp_path):
    folder = _folder_copy(onnx_dir, tmp_path / "swapped")
    (folder / "dit_decoder.onnx").unlink()
    (folder / "dit_decoder.onnx").symlink_to(onnx_dir / "vae_decoder.onnx")
    _relist(folder, "dit_decoder", onnx_dir / "vae_decoder.onnx")
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(folder),
                "--out", str(tmp_path / "o.wav"))
    _assert_clean_error(proc, "dit_decoder.onnx inputs", "do not match the contract", "hidden_states")


def test_error_missing_graph(binary, onnx_dir, tmp_path):
    folder = _folder_copy(onnx_dir, tmp_path / "nograph")
    (folder / "vae_decoder.onnx").unlink()
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(folder),
                "--out", str(tmp_path / "o.wav"))
    _assert_clean_error(proc, "missing graph", str(folder / "vae_decoder.onnx"))


def test_error_missing_asset(binary, onnx_dir, tmp_path):
    folder = _folder_copy(onnx_dir, tmp_path / "noasset")
    (folder / "silence_latent.npy").unlink()
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(folder),
                "--out", str(tmp_path / "o.wav"))
    _assert_clean_error(proc, "missing asset", str(folder / "silence_latent.npy"), "acestep-export")


def test_error_tampered_asset(binary, onnx_dir, tmp_path):
    folder = _folder_copy(onnx_dir, tmp_path / "tampered")
    (folder / "silence_latent.npy").unlink()
    np.save(folder / "silence_latent.npy", np.zeros((1, 64, 10), np.float32))
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(folder),
                "--out", str(tmp_path / "o.wav"))
    _assert_clean_error(proc, "silence_latent.npy", "does not match manifest.json")


@pytest.mark.parametrize("name", ["bool_bpm", "wrong_id", "long_duration", "negative_seed", "unknown_field"])
def test_error_malformed_case_says_what_python_says(binary, onnx_dir, tmp_path, name):
    """The Rust case reader refuses a malformed case with Python's message (file and field named)."""
    from acestep_ort.host.case import CaseError, load_case

    path = tmp_path / f"{name}.json"
    path.write_text(rust_vectors.BAD_CASES[name], encoding="utf-8")
    with pytest.raises(CaseError) as python_error:
        load_case(path)
    proc = _run(binary, "--case", str(path), "--onnx-dir", str(onnx_dir), "--out", str(tmp_path / "o.wav"))
    _assert_clean_error(proc, str(python_error.value))


def test_error_unsupported_output_format(binary, onnx_dir, tmp_path):
    proc = _run(binary, "--case", str(paths.CASES_DIR / "text2music_01.json"), "--onnx-dir", str(onnx_dir),
                "--out", str(tmp_path / "o.ogg"))
    _assert_clean_error(proc, "o.ogg", "unsupported audio format")


def test_mp3_equals_python_lameenc(binary, onnx_dir, py_ort, tmp_path):
    """The mp3 of the mp3 case is py_ort's byte for byte, except the encoder's version string in the padding
    (LAME 3.100 here; lameenc's build of LAME calls itself 4.0)."""
    pytest.importorskip("lameenc")
    from acestep_ort.host.audio import save_audio
    from acestep_ort.host.case import load_case

    case = load_case(paths.CASES_DIR / "text2music_04.json")
    assert case.output_format == "mp3"
    proc = _run(binary, "--case", str(case.path), "--onnx-dir", str(onnx_dir), "--out", str(tmp_path / "r.mp3"))
    assert proc.returncode == 0, proc.stderr
    save_audio(tmp_path / "p.mp3", py_ort.run_case(case)["audio"][0])
    ours, ref = (tmp_path / "r.mp3").read_bytes(), (tmp_path / "p.mp3").read_bytes()
    assert len(ours) == len(ref)
    diff = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(ref, np.uint8))
    tags = [i for i in range(len(ours)) if ours.startswith(b"LAME", i)]
    assert tags and tags == [i for i in range(len(ref)) if ref.startswith(b"LAME", i)]
    outside = [int(i) for i in diff if not any(t + 4 <= i < t + 9 for t in tags)]
    assert not outside, f"mp3 bytes differ outside the encoder version strings at {outside[:10]}"


def test_binary_missing_skips_with_the_build_command(parity_session, monkeypatch, tmp_path):
    """Without a built binary the backend is unavailable and says how to build it (never a silent pass)."""
    from acestep_parity.backends import BackendContext
    from acestep_parity.backends.rust import RustBackend

    monkeypatch.setenv("ACESTEP_RUST_GENERATE", str(tmp_path / "absent"))
    assert find_binary() is None
    ctx = BackendContext(Path("."), "x", "fp32", tmp_path)
    availability = RustBackend(ctx).availability()
    assert not availability.ok and "cargo build --release" in availability.reason


# ------------------------------------------------------------------------------------------- benchmark

BENCH_CASE = "text2music_05"  # the longest latent (T=300, three VAE tiles)
BENCH_ROUNDS = 3


def py_ort_timed_run(engine, request) -> tuple[float, float]:
    """(end-to-end seconds, seconds inside ``InferenceSession.run``) of one py_ort generation."""
    import time

    spent = [0.0]
    originals = {}
    for name, session in engine.sessions.sessions.items():
        originals[name] = session.run

        def timed(*args, _run=session.run, **kwargs):
            start = time.perf_counter()
            try:
                return _run(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        session.run = timed
    try:
        start = time.perf_counter()
        engine.generate(request)
        return time.perf_counter() - start, spent[0]
    finally:
        for name, session in engine.sessions.sessions.items():
            session.run = originals[name]


def rust_timed_run(binary: Path, onnx_dir: Path, case_path: Path, workdir: Path) -> tuple[float, float, float]:
    """(end-to-end seconds without loading, seconds inside ``Session::run``, load seconds) of one Rust run."""
    from acestep_parity.backends.rust import run_generate

    _, info = run_generate(binary, case_path, onnx_dir, workdir)
    return info["generate_s"], info["ort_run_s"], info["load_s"]


@pytest.mark.parametrize("bench_case", [BENCH_CASE])  # the id names the case (-k text2music_05)
def test_benchmark_host_overhead(benchmark, rust, py_ort, binary, onnx_dir, tmp_path, record_property, bench_case):
    """Rust end to end vs the sum of its ONNX Runtime session times, beside py_ort (same case, same machine).

    No time is asserted; the row goes to the benchmark JSON (``extra_info``) and the JUnit properties.
    """
    from statistics import median

    from acestep_ort.host.case import load_case

    case = load_case(paths.CASES_DIR / f"{bench_case}.json")
    rust_rows = [rust_timed_run(binary, onnx_dir, case.path, tmp_path) for _ in range(BENCH_ROUNDS)]
    py_rows = [py_ort_timed_run(py_ort.engine, case.request()) for _ in range(BENCH_ROUNDS)]
    row = {
        "case": case.id,
        "rust_end_to_end_s": median(r[0] for r in rust_rows),
        "rust_ort_run_s": median(r[1] for r in rust_rows),
        "rust_load_s": median(r[2] for r in rust_rows),
        "py_ort_end_to_end_s": median(r[0] for r in py_rows),
        "py_ort_ort_run_s": median(r[1] for r in py_rows),
    }
    row["rust_host_overhead_s"] = row["rust_end_to_end_s"] - row["rust_ort_run_s"]
    row["py_ort_host_overhead_s"] = row["py_ort_end_to_end_s"] - row["py_ort_ort_run_s"]
    benchmark.extra_info.update(row)
    for key, value in row.items():
        record_property(key, value)
    benchmark.pedantic(rust_timed_run, args=(binary, onnx_dir, case.path, tmp_path), rounds=1, iterations=1)
    assert row["rust_host_overhead_s"] >= 0 and row["py_ort_host_overhead_s"] >= 0
    print("\n" + json.dumps(row, indent=1))


def test_default_onnx_dir_is_the_exported_cache(harness, onnx_dir, tmp_path):
    """Without --onnx-dir the binary takes <cache>/artifacts/<id>/fp32 (plan P3.6: `generate --case …` alone)."""
    (tmp_path / "artifacts" / "some-checkpoint").mkdir(parents=True)
    (tmp_path / "artifacts" / "some-checkpoint" / "fp32").symlink_to(onnx_dir)
    env = {**rust_env(), "ACESTEP_PARITY_CACHE": str(tmp_path)}
    env.pop("ACESTEP_ONNX_DIR", None)
    proc = _run(harness, "tokenize", stdin="[]", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "using the exported ONNX folder" in proc.stderr and "some-checkpoint" in proc.stderr
    env["ACESTEP_PARITY_CACHE"] = str(tmp_path / "empty")
    _assert_clean_error(_run(harness, "tokenize", stdin="[]", env=env, cwd=tmp_path), "no ONNX folder", "--onnx-dir")
