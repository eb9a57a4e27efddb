"""The C-ABI library (``rust/acestep-ffi``, ``libacestep_runtime.so``) and its hosts.

* linking: no ONNX Runtime inside (``readelf -d`` NEEDED, ``nm -D`` symbols), the exported ``ace_*`` symbols a
  superset of the committed ABI v1 list (additions only), every header function exported;
* the error contract through ctypes: NULL pointers, invalid UTF-8, bad JSON, wrong lengths give a status and a
  structured JSON error, never a crash (every entry point and argument of the header: tests/test_ffi_abi_table.py);
* the Python host (the ``dll`` backend): every capture of every case equal to py_ort's, max_abs recorded
  (the per-tensor / per-step gates of ``dll~py_ort`` and ``dll~torch`` run in ``tests/test_parity.py``);
* the C, Node.js and C# (Mono, ``RunCase.cs``: ONNX Runtime's C API through P/Invoke) hosts run one whole case
  each, captures bit-equal to py_ort; the C# ``ReplayHost.cs`` replays recorded inputs (LM constraints included)
  through the library and must equal Python bit for bit.

Tests that need the library skip, saying how to build it, where it is not built (``make test`` builds it).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from parity_test_helpers import ORT_GO_MODULE, ORT_HEADER, TOOL_CACHE, backend_or_skip

from acestep_parity import paths
from acestep_parity.backends.dll import load_host_module

ABI_SYMBOLS = paths.REPO_ROOT / "rust" / "acestep-ffi" / "abi" / "v1.symbols"
HEADER = paths.REPO_ROOT / "include" / "acestep_runtime.h"
EXAMPLES = paths.REPO_ROOT / "examples" / "ffi"
CAPTURES = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "schedule",
    "noise", "xt", "vt", "pred_latents", "audio_decoded", "audio",
)
# What a simple_mode run captures besides CAPTURES: the planner's (acestep_ort.host.lm_planner.captures).
LM_CAPTURES = (
    "lm_prompt_ids", "lm_tokens", "lm_logits", "lm_topk_ids", "lm_topk_logits", "lm_allowed", "lm_mask_digests",
    "lm_margins", "lm_text", "lm_metadata",
)


@pytest.fixture(scope="module")
def host_module():
    return load_host_module()


@pytest.fixture(scope="module")
def ffi(library, host_module):
    return host_module.Library(library)


def _backend(parity_session, name: str):
    return backend_or_skip(parity_session, name)


@pytest.fixture(scope="module")
def dll(parity_session):
    return _backend(parity_session, "dll")


@pytest.fixture(scope="module")
def py_ort(parity_session):
    return _backend(parity_session, "py_ort")


# ------------------------------------------------------------------------------------------- linking and ABI


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} (binutils) is not installed")
    return found


def exported_symbols(lib: Path) -> list[str]:
    out = subprocess.run([_tool("nm"), "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    return sorted(line.split()[-1] for line in out.stdout.splitlines() if line.strip())


def test_library_links_no_onnxruntime(library, record_property):
    dynamic = subprocess.run([_tool("readelf"), "-d", str(library)], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic.stdout)
    record_property("needed", " ".join(needed))
    assert needed, "readelf found no NEEDED entries: not a dynamic library?"
    assert not [n for n in needed if "onnxruntime" in n.lower()], needed
    symbols = subprocess.run([_tool("nm"), "-D", str(library)], capture_output=True, text=True, check=True).stdout
    ort = [line for line in symbols.splitlines() if re.search(r"\b_?Ort[A-Z]", line) or "onnxruntime" in line]
    assert not ort, f"ONNX Runtime symbols in the library: {ort[:5]}"


def test_exported_symbols_are_a_superset_of_abi_v1(library, record_property):
    """ABI v1 only grows: every committed symbol is still exported (new ones are added to the list)."""
    ace = [s for s in exported_symbols(library) if s.startswith("ace_")]
    record_property("symbols", " ".join(ace))
    committed = [line.strip() for line in ABI_SYMBOLS.read_text(encoding="utf-8").splitlines()
                 if line.strip() and not line.startswith("#")]
    missing = sorted(set(committed) - set(ace))
    assert not missing, f"symbols of ABI v1 no longer exported (a breaking change): {missing}"
    added = sorted(set(ace) - set(committed))
    assert not added, f"new exported symbols {added}: append them to {ABI_SYMBOLS.relative_to(paths.REPO_ROOT)}"


def test_header_declares_exactly_the_exported_functions(library):
    declared = set(re.findall(r"\b(ace_[a-z0-9_]+)\s*\(", HEADER.read_text(encoding="utf-8")))
    ace = {s for s in exported_symbols(library) if s.startswith("ace_")}
    assert declared == ace, (sorted(declared - ace), sorted(ace - declared))


# ------------------------------------------------------------------------------------------- error contract


def _error(ffi) -> dict:
    err = ffi.last_error()
    assert err is not None and set(err) == {"code", "name", "message", "field"}, err
    return err


def test_version_and_abi(ffi):
    assert ffi.lib.ace_abi_version() == 1
    assert re.fullmatch(r"acestep-runtime \d+\.\d+\.\d+ \(abi 1\)", ffi.version())
    assert ffi.last_error() is None


@pytest.mark.parametrize("config, code, field", [
    (None, 1, "config_json"),
    (b"\xff\xfe{}", 2, "config_json"),
    (b"{not json", 3, "config_json"),
    (b"[1, 2]", 3, "config_json"),
    (b'{"bogus": 1}', 4, "bogus"),
    (b'{"abi_version": 2}', 4, "abi_version"),
    (b'{"onnx_dir": 5}', 3, "onnx_dir"),
    (b'{"onnx_dir": "/nonexistent/acestep"}', 6, "onnx_dir"),
    (b"{}", 4, "tokenizer_json"),
], ids=["null", "utf8", "syntax", "not-object", "unknown-key", "abi", "type", "missing-dir", "empty"])
def test_create_context_errors(ffi, config, code, field):
    assert not ffi.lib.ace_create_context(config)
    err = _error(ffi)
    assert (err["code"], err["field"]) == (code, field), err


@pytest.fixture(scope="module")
def context(ffi, host_module, dll):
    with host_module.Context(ffi, {"onnx_dir": str(dll.onnx_dir)}) as ctx:
        yield ctx


def _case_json(case_id: str) -> dict:
    return json.loads((paths.CASES_DIR / f"{case_id}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("change, field", [
    ({"bpm": 5}, "bpm"), ({"seeds": []}, "seeds"), ({"shift": 0}, "shift"), ({"duration": 601}, "duration"),
    ({"timesteps": [2.0]}, "timesteps"), ({"bogus": 1}, "bogus"), ({"task": "nope"}, "task"),
], ids=["bpm", "seeds", "shift", "duration", "timesteps", "unknown", "task"])
def test_prepare_request_names_the_bad_field(context, host_module, change, field):
    with pytest.raises(host_module.AceError) as info:
        context.prepare_request({**_case_json("text2music_01"), **change})
    assert (info.value.code, info.value.field) == (4, field)


def test_calls_reject_null_and_wrong_lengths(ffi, context):
    lib, F = ffi.lib, ctypes.POINTER(ctypes.c_float)
    buf = (ctypes.c_float * 8)()
    out = ctypes.c_void_p()
    assert lib.ace_prepare_request(None, b"{}", ctypes.byref(out)) == 1 and _error(ffi)["field"] == "ctx"
    assert lib.ace_prepare_request(context.handle, None, ctypes.byref(out)) == 1
    assert lib.ace_prepare_request(context.handle, b"\xc3\x28", ctypes.byref(out)) == 2 and not out.value
    assert lib.ace_prepare_request(context.handle, b"{}", None) in (1, 4)
    assert lib.ace_scheduler_step(context.handle, None, ctypes.cast(buf, F), 8, 0.1, ctypes.cast(buf, F)) == 1
    assert _error(ffi)["field"] == "xt"
    assert lib.ace_scheduler_step(context.handle, ctypes.cast(buf, F), ctypes.cast(buf, F), 8, float("nan"),
                                  ctypes.cast(buf, F)) == 4
    seeds = (ctypes.c_uint64 * 1)(42)
    assert lib.ace_noise(context.handle, seeds, 1, 2, ctypes.cast(buf, F), 8) == 5
    assert _error(ffi) == {"code": 5, "name": "length_mismatch", "field": "out",
                           "message": "out has 8 elements, this call needs exactly 128"}
    assert lib.ace_timbre_reference(context.handle, 1, ctypes.cast(buf, F), 8) == 5
    assert lib.ace_postprocess_audio(context.handle, ctypes.cast(buf, F), 7, 2, ctypes.cast(buf, F)) == 5
    misaligned = ctypes.cast(ctypes.addressof(buf) + 1, F)
    assert lib.ace_scheduler_step(context.handle, misaligned, ctypes.cast(buf, F), 4, 0.1, ctypes.cast(buf, F)) == 4
    count = ctypes.c_size_t()
    assert lib.ace_json_i64(b'{"a": [1, [2, 3]]}', b"a", None, 0, ctypes.byref(count)) == 0 and count.value == 3
    assert lib.ace_json_i64(b'{"a": "x"}', b"a", None, 0, ctypes.byref(count)) == 4
    assert lib.ace_json_i64(b"{", b"a", None, 0, ctypes.byref(count)) == 3
    lib.ace_string_free(None)
    lib.ace_free_context(None)


def test_step_inputs_and_scheduler_step_follow_the_schedule(context):
    from acestep_ort.host import schedule

    sched = schedule.resolve_schedule(2.5, None)
    t32 = schedule.schedule_f32(sched)
    rng = np.random.default_rng(0)
    xt = rng.standard_normal((2, 130, 64)).astype(np.float32)
    vt = rng.standard_normal((2, 130, 64)).astype(np.float32)
    for i in range(len(t32)):
        t, info = context.step_inputs({"shift": 2.5, "step": i}, 2)
        assert np.array_equal(t, np.full(2, t32[i], np.float32)) and info["final"] == (i == len(t32) - 1)
        assert np.array_equal(context.scheduler_step(xt, vt, info["dt"]), schedule.ode_update(xt, vt, sched, i))


# ------------------------------------------------------------------------------------------- the Python host


def test_dll_captures_match_py_ort(dll, py_ort, case, runnable_case, record_property):
    """Every capture of the Python DLL host equals py_ort's (same graphs, same libonnxruntime and options); in
    simple mode the planner's captures too (the LM loop on the library's prompt, FSM and hand-off)."""
    ours, ref = dll.run_case(runnable_case).arrays, py_ort.run_case(runnable_case).arrays
    names = CAPTURES + (LM_CAPTURES if runnable_case.task == "simple_mode" else ())
    assert sorted(ours) == sorted(names) and set(ref) >= set(names)
    worst = {}
    for name in names:
        assert ours[name].dtype == ref[name].dtype and ours[name].shape == ref[name].shape, name
        if ours[name].dtype.kind in "US":  # text, digests: equal or not
            worst[name] = 0.0 if np.array_equal(ours[name], ref[name]) else float("inf")
            continue
        a, b = ours[name].astype(np.float64), ref[name].astype(np.float64)
        with np.errstate(invalid="ignore"):  # margins hold inf where one token was allowed: equal infs count 0
            worst[name] = float(np.max(np.where(a == b, 0.0, np.abs(a - b)))) if a.size else 0.0
    record_property("max_abs", json.dumps(worst))
    different = {k: v for k, v in worst.items() if v != 0.0 or not np.array_equal(ours[k], ref[k])}
    assert not different, f"dll~py_ort differs: {different}"


def test_python_example_cli_writes_wav(library, dll, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "python" / "acestep_ffi.py"),
                           "--onnx-dir", str(dll.onnx_dir), "--case", str(paths.CASES_DIR / "text2music_04.json"),
                           "--out", str(tmp_path / "out.wav"), "--lib", str(library)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import soundfile as sf

    audio, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 48000 and audio.shape[1] == 2 and audio.shape[0] > 0


# ------------------------------------------------------------------------------------------- other hosts


def _compare_dumps(out_dir: Path, ref: dict[str, np.ndarray]) -> dict[str, float]:
    worst = {}
    for name in CAPTURES:
        got = np.load(out_dir / f"{name}.npy")
        assert got.dtype == ref[name].dtype and got.shape == ref[name].shape, (name, got.dtype, got.shape)
        worst[name] = float(np.max(np.abs(got.astype(np.float64) - ref[name].astype(np.float64))))
    return worst


def _onnxruntime_dylib() -> Path:
    from acestep_parity.backends.rust import python_ort_dylib

    dylib = python_ort_dylib()
    if dylib is None:
        pytest.skip("no libonnxruntime in this Python's onnxruntime package")
    return dylib


C_MAKEFILE = EXAMPLES / "c" / "Makefile"


def _build_c_host(library: Path, exe: Path, flags: list[str]) -> subprocess.CompletedProcess:
    """``make`` with examples/ffi/c/Makefile (the file a user runs): the library's folder and the output given,
    ``onnxruntime_c_api.h`` from the Go module fetched into the tool cache (``go mod download``, never committed)."""
    make, cc = shutil.which("make"), shutil.which("cc") or shutil.which("gcc")
    if make is None or cc is None:
        pytest.skip("the C host needs make and a C compiler (cc/gcc)")
    if shutil.which("go") is None and not ORT_HEADER.is_file():
        pytest.skip(f"the C host needs `go` to fetch onnxruntime_c_api.h ({ORT_GO_MODULE})")
    return subprocess.run([make, "-C", str(C_MAKEFILE.parent), f"EXE={exe}", f"ACESTEP_LIB_DIR={library.parent}",
                           f"TOOL_CACHE={TOOL_CACHE}", f"CC={cc}", f"CFLAGS={' '.join(flags)}"],
                          capture_output=True, text=True, timeout=300)


def test_c_host_runs_a_case_bit_equal(library, dll, py_ort, tmp_path, record_property):
    from acestep_ort.host.case import load_case

    exe = tmp_path / "run_case"
    build = _build_c_host(library, exe, ["-O2"])
    assert build.returncode == 0, build.stderr
    case = paths.CASES_DIR / "text2music_02.json"
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([str(exe), str(dll.onnx_dir), str(case), str(_onnxruntime_dylib()), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    worst = _compare_dumps(out, py_ort.run_case(load_case(case)).arrays)
    record_property("max_abs", json.dumps(worst))
    assert not {k: v for k, v in worst.items() if v}, worst
    assert (out / "out.wav").stat().st_size > 58


def test_c_host_under_address_sanitizer(library, dll, py_ort, tmp_path, record_property):
    """The C host built with ``-fsanitize=address`` runs a whole case: no invalid access in the host or in the libc
    calls the library makes on its buffers, and no leak but ONNX Runtime's own and the example's host buffers
    (which it leaves to process exit): everything the library hands out is freed (LeakSanitizer, where it can
    run). The library itself is not instrumented. A few seconds."""
    from acestep_ort.host.case import load_case

    exe = tmp_path / "run_case_asan"
    build = _build_c_host(library, exe, ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"])
    if build.returncode != 0 and "asan" in build.stderr.lower():
        pytest.skip(f"this compiler cannot link AddressSanitizer: {build.stderr.strip()[-300:]}")
    assert build.returncode == 0, build.stderr
    suppressions = tmp_path / "lsan.supp"
    suppressions.write_text("leak:libonnxruntime.so\nleak:xmalloc\n", encoding="utf-8")
    case = paths.CASES_DIR / "text2music_02.json"
    out = tmp_path / "out"
    out.mkdir()

    def run(leaks: bool) -> subprocess.CompletedProcess:
        env = {**os.environ, "ASAN_OPTIONS": f"detect_leaks={int(leaks)}:halt_on_error=1",
               "LSAN_OPTIONS": f"suppressions={suppressions}"}
        return subprocess.run([str(exe), str(dll.onnx_dir), str(case), str(_onnxruntime_dylib()), str(out)],
                              capture_output=True, text=True, timeout=600, env=env)

    proc, leaks = run(True), True
    if "LeakSanitizer has encountered a fatal error" in proc.stderr:  # no ptrace here (some containers)
        proc, leaks = run(False), False
    record_property("leak_check", leaks)
    assert proc.returncode == 0 and "Sanitizer" not in proc.stderr, proc.stderr[-6000:]
    worst = _compare_dumps(out, py_ort.run_case(load_case(case)).arrays)
    assert not {k: v for k, v in worst.items() if v}, worst


def test_node_pins_the_python_onnxruntime_version():
    """Bit-equality needs one ONNX Runtime release on both sides: onnxruntime-node pins the wheel's version."""
    import onnxruntime

    package = json.loads((EXAMPLES / "node" / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((EXAMPLES / "node" / "package-lock.json").read_text(encoding="utf-8"))
    assert package["dependencies"]["onnxruntime-node"] == onnxruntime.__version__
    assert lock["packages"]["node_modules/onnxruntime-node"]["version"] == onnxruntime.__version__


def node_modules() -> Path:
    """``npm ci`` of the committed package-lock.json into the tool cache (once per lock file); the install script
    of onnxruntime-node is skipped (ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship in the package)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js / npm are not installed (the Node host needs node >= 18 and npm)")
    import hashlib

    lock = (EXAMPLES / "node" / "package-lock.json").read_bytes()
    home = TOOL_CACHE / "node-host" / hashlib.sha256(lock).hexdigest()[:16]
    if not (home / "node_modules" / ".installed").is_file():
        home.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(EXAMPLES / "node" / name, home / name)
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--cache", str(TOOL_CACHE / "npm")], cwd=home,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (home / "node_modules" / ".installed").touch()
    return home / "node_modules"


def test_node_host_runs_a_case_bit_equal(library, dll, py_ort, tmp_path, record_property):
    from acestep_ort.host.case import load_case

    modules = node_modules()
    case = paths.CASES_DIR / "text2music_03.json"
    out = tmp_path / "out"
    run = subprocess.run(["node", str(EXAMPLES / "node" / "run_case.js"), str(library), str(dll.onnx_dir), str(case),
                          str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NODE_PATH": str(modules)})
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["ort"]["node"] == info["ort"]["common"]
    worst = _compare_dumps(out, py_ort.run_case(load_case(case)).arrays)
    record_property("max_abs", json.dumps(worst))
    assert not {k: v for k, v in worst.items() if v}, worst
    assert (out / "out.wav").stat().st_size > 58


# ------------------------------------------------------------------------------------------- LM functions


@pytest.fixture(scope="module")
def lm_context(ffi, host_module, dll):
    with host_module.Context(ffi, {"onnx_dir": str(dll.onnx_dir)}) as ctx:
        yield ctx


def test_lm_functions_equal_the_python_fsm(lm_context, py_ort, case, runnable_case, record_property):
    """The library's FSM on the raw logits py_ort recorded masks exactly what the Python FSM allowed (allowed
    logits unchanged, bit for bit), and the token stream finalizes to the same text and metadata JSON."""
    from acestep_ort.host import lm_planner

    if runnable_case.task != "simple_mode":
        pytest.skip(f"{runnable_case.id} has no LM stage (text2music)")
    run = py_ort.run_case(runnable_case).arrays
    info = lm_context.lm_reset({"query": runnable_case.query, "instrumental": runnable_case.instrumental,
                                "vocal_language": lm_planner.case_vocal_language(runnable_case),
                                "max_duration": lm_planner.case_max_duration(runnable_case)})
    assert info["prompt_ids"] == run["lm_prompt_ids"].tolist()
    logits, tokens, allowed = run["lm_logits"], run["lm_tokens"], run["lm_allowed"]
    differing = []
    for i, (raw, token) in enumerate(zip(logits, tokens, strict=True)):
        masked = lm_context.apply_lm_constraints(raw)
        if not np.array_equal(masked, np.where(allowed[i], raw, np.float32(-np.inf))):
            differing.append(i)
        lm_context.lm_update(int(token))
    record_property("lm_steps", len(tokens))
    assert not differing, f"steps whose mask differs from the Python FSM: {differing[:10]}"
    final = lm_context.finalize_metadata(tokens)
    assert final["text"] == str(run["lm_text"])
    assert final["metadata_json"] == str(run["lm_metadata"])


def test_lm_calls_need_a_generation_and_the_vocab_size(ffi, host_module, dll):
    with host_module.Context(ffi, {"onnx_dir": str(dll.onnx_dir)}) as ctx:
        with pytest.raises(host_module.AceError) as info:
            ctx.apply_lm_constraints(np.zeros(8, np.float32))
        assert (info.value.code, info.value.field) == (4, "ctx")
        vocab = ctx.lm_reset({"query": "x"})["vocab_size"]
        with pytest.raises(host_module.AceError) as info:
            ctx.apply_lm_constraints(np.zeros(vocab + 1, np.float32))
        assert (info.value.code, info.value.field) == (5, "vocab_size")
        with pytest.raises(host_module.AceError) as info:
            ctx.lm_update(vocab)
        assert info.value.field == "token_id"
        with pytest.raises(host_module.AceError) as info:
            ctx.lm_reset({"max_duration": 5})
        assert info.value.field == "max_duration"


def test_planned_request_needs_a_simple_mode_case_and_vocabulary_ids(ffi, host_module, dll):
    """``ace_prepare_planned_request`` refuses a text2music case and ids outside the LM vocabulary (field named)."""
    simple = json.loads((paths.CASES_DIR / "simple_mode_01.json").read_text(encoding="utf-8"))
    text2music = json.loads((paths.CASES_DIR / "text2music_01.json").read_text(encoding="utf-8"))
    with host_module.Context(ffi, {"onnx_dir": str(dll.onnx_dir)}) as ctx:
        vocab = ctx.lm_reset({"query": "x"})["vocab_size"]
        with pytest.raises(host_module.AceError) as info:
            ctx.prepare_planned_request(text2music, [1, 2])
        assert info.value.field == "task"
        with pytest.raises(host_module.AceError) as info:
            ctx.prepare_planned_request(simple, [vocab])
        assert info.value.field == "token_ids"
        request = ctx.prepare_planned_request(simple, [])  # no tokens: the case's duration, "unknown" language
        assert request["task"] == "text2music" and request["latent_frames"] > 0 and "planner" in request


# ------------------------------------------------------------------------------------------- C# (Mono)


def test_csharp_host_replays_recorded_inputs_bit_equal(library, dll, py_ort, lm_context, tmp_path, record_property):
    """C# through P/Invoke: request preparation, noise, scheduler steps on py_ort's recorded xt/vt,
    post-processing, LM constraints on recorded logits and metadata, all equal to Python's bit for bit."""
    from acestep_ort.host import lm_planner
    from acestep_ort.host.case import load_case

    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("Mono is not installed (apt-get install mono-mcs mono-runtime)")
    exe = tmp_path / "ReplayHost.exe"
    build = subprocess.run([mcs, "-nologo", "-warnaserror", f"-out:{exe}", str(EXAMPLES / "csharp" / "ReplayHost.cs")],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    case = load_case(paths.CASES_DIR / "text2music_02.json")
    ref = py_ort.run_case(case).arrays
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "case.json").write_text(case.path.read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("xt", "vt", "audio_decoded"):
        ref[name].astype(np.float32).tofile(replay / f"{name}.bin")
    lm_case = load_case(paths.CASES_DIR / "simple_mode_01.json")
    lm_ref = py_ort.run_case(lm_case).arrays
    options = {"query": lm_case.query, "instrumental": lm_case.instrumental,
               "vocal_language": lm_planner.case_vocal_language(lm_case),
               "max_duration": lm_planner.case_max_duration(lm_case)}
    (replay / "lm_options.json").write_text(json.dumps(options), encoding="utf-8")
    lm_ref["lm_logits"].astype(np.float32).tofile(replay / "lm_logits.bin")
    lm_ref["lm_tokens"].astype(np.int64).tofile(replay / "lm_tokens.bin")
    run = subprocess.run([mono, str(exe), str(dll.onnx_dir), str(replay)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "LD_LIBRARY_PATH": str(library.parent)})
    assert run.returncode == 0, run.stdout + run.stderr

    request = json.loads((replay / "out_request.json").read_text(encoding="utf-8"))
    assert request == lm_context.prepare_request(json.loads(case.path.read_text(encoding="utf-8")))
    read = lambda name, shape: np.fromfile(replay / name, dtype=np.float32).reshape(shape)  # noqa: E731
    assert np.array_equal(read("out_noise.bin", ref["noise"].shape), ref["noise"])
    xt_next = read("out_xt_next.bin", ref["xt"].shape)
    assert np.array_equal(xt_next[:-1], ref["xt"][1:]), "scheduler steps differ from py_ort's loop"
    assert np.array_equal(xt_next[-1], ref["pred_latents"])
    assert np.array_equal(read("out_audio.bin", ref["audio"].shape), ref["audio"])
    logits, allowed = lm_ref["lm_logits"], lm_ref["lm_allowed"]
    masked = read("out_lm_masked.bin", logits.shape)
    assert np.array_equal(masked, np.where(allowed, logits, np.float32(-np.inf)))
    final = json.loads((replay / "out_lm_final.json").read_text(encoding="utf-8"))
    assert final["metadata_json"] == str(lm_ref["lm_metadata"]) and final["text"] == str(lm_ref["lm_text"])
    record_property("lm_steps", int(len(lm_ref["lm_tokens"])))


def _mono() -> tuple[str, str]:
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("Mono is not installed (apt-get install mono-mcs mono-runtime; `make host-deps` does it as root)")
    return mcs, mono


def test_csharp_host_runs_a_case_bit_equal(library, dll, py_ort, tmp_path, record_property):
    """``RunCase.cs``: the whole case in C#, ONNX Runtime through its C API (the wheel's libonnxruntime, the OrtApi
    table through delegates), the rest through the library; every capture bit-equal to py_ort."""
    import time

    from acestep_ort.host.case import load_case

    mcs, mono = _mono()
    exe = tmp_path / "RunCase.exe"
    build = subprocess.run([mcs, "-nologo", "-warnaserror", f"-out:{exe}", str(EXAMPLES / "csharp" / "RunCase.cs")],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    usage = subprocess.run([mono, str(exe)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: "), usage.stderr
    case = paths.CASES_DIR / "text2music_02.json"
    out = tmp_path / "out"
    started = time.monotonic()
    run = subprocess.run([mono, str(exe), str(dll.onnx_dir), str(case), str(_onnxruntime_dylib()), str(out)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "LD_LIBRARY_PATH": str(library.parent)})
    record_property("seconds", round(time.monotonic() - started, 2))
    assert run.returncode == 0, run.stdout + run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert (info["case"], info["batch"]) == ("text2music_02", 2), info
    worst = _compare_dumps(out, py_ort.run_case(load_case(case)).arrays)
    record_property("max_abs", json.dumps(worst))
    assert not {k: v for k, v in worst.items() if v}, worst
    assert (out / "out.wav").stat().st_size > 58


def test_csharp_ort_slots_match_the_header(tmp_path, record_property):
    """Every ``OrtSlot`` of RunCase.cs is ``offsetof(OrtApi, name) / sizeof(void *)`` of the header the C host
    is built with (a wrong slot would call another function)."""
    text = (EXAMPLES / "csharp" / "RunCase.cs").read_text(encoding="utf-8")
    body = re.search(r"static class OrtSlot\s*\{(.*?)\}", text, re.S).group(1)
    slots = dict((name, int(index)) for name, index in re.findall(r"public const int (\w+) = (\d+);", body))
    assert len(slots) >= 20, slots
    exe = tmp_path / "slots"
    make, cc = shutil.which("make"), shutil.which("cc") or shutil.which("gcc")
    if make is None or cc is None:
        pytest.skip("make and a C compiler are needed to read the header's offsets")
    header = TOOL_CACHE / "gomod" / ORT_GO_MODULE
    if not (header / "onnxruntime_c_api.h").is_file():
        if shutil.which("go") is None:
            pytest.skip(f"`go` is needed to fetch onnxruntime_c_api.h ({ORT_GO_MODULE})")
        fetch = subprocess.run([make, "-C", str(C_MAKEFILE.parent), "header", f"TOOL_CACHE={TOOL_CACHE}"],
                               capture_output=True, text=True, timeout=300)
        assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    source = tmp_path / "slots.c"
    source.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"onnxruntime_c_api.h\"\nint main(void) {\n"
                      + "".join(f'  printf("{n} %zu\\n", offsetof(OrtApi, {n}) / sizeof(void *));\n' for n in slots)
                      + "  return 0;\n}\n", encoding="utf-8")
    build = subprocess.run([cc, "-I", str(header), str(source), "-o", str(exe)], capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stderr
    printed = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    actual = {printed[i]: int(printed[i + 1]) for i in range(0, len(printed), 2)}
    record_property("slots", len(slots))
    assert actual == slots, {k: (slots[k], actual.get(k)) for k in slots if actual.get(k) != slots[k]}


SESSION_OPTION_FIELDS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level",
                         "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "log_severity_level",
                         "execution_order", "use_deterministic_compute")


def test_example_host_session_options_equal_the_runtimes(host_module, monkeypatch):
    """The standalone example host keeps its own copy of the runtime's ONNX Runtime options; it must stay equal
    (a drifted copy, e.g. with the CPU arena on, already happened once)."""
    from acestep_ort.session_manager import SessionConfig

    for threads in ("0", "3"):
        monkeypatch.setenv("ACESTEP_ORT_THREADS", threads)
        host, runtime = host_module.session_options(), SessionConfig(intra_op_threads=int(threads)).session_options()
        differ = {f: (getattr(host, f), getattr(runtime, f)) for f in SESSION_OPTION_FIELDS
                  if getattr(host, f) != getattr(runtime, f)}
        assert not differ, f"examples/ffi/python/acestep_ffi.py session_options() differs from SessionConfig: {differ}"
