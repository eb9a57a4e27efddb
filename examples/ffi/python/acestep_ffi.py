"""A Python host of the ACE-Step C-ABI library (``libacestep_runtime``): ONNX Runtime from the ``onnxruntime``
wheel runs the graphs, the library does everything else (case validation, prompts, tokenization, noise,
schedule, scheduler step, VAE tiling, post-processing; in simple mode the LM prompt, the constrained-decoding FSM,
the metadata and the hand-off of the planner's fields to text2music). Needs only numpy, onnxruntime and ctypes.

It is also the ``dll`` backend of the parity suite (``acestep_parity/backends/dll.py`` loads this file), so
``dll~py_ort`` proves that this path reproduces the Python ORT runtime bit for bit.

    python examples/ffi/python/acestep_ffi.py --onnx-dir DIR --case cases/text2music_01.json --out out.wav
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ABI_VERSION = 1
GRAPHS = ("text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder")
LM_GRAPHS = ("lm_prefill", "lm_decode")  # the 5 Hz LM planner (simple mode), opened on first use
TOPK_STORED = 8  # per-step raw logits captured as top-k (ids + values), as the other runtimes capture them
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
_F32P = ctypes.POINTER(ctypes.c_float)
_SIZE = ctypes.c_size_t
_CTX = ctypes.c_void_p
_STR = ctypes.c_char_p
_OUT_STR = ctypes.POINTER(ctypes.c_void_p)


class AceError(RuntimeError):
    """A failed library call: ``code``, ``name`` and ``field`` from the library's JSON error."""

    def __init__(self, call: str, error: dict):
        super().__init__(f"{call}: {error.get('name')} ({error.get('code')}): {error.get('message')}"
                         + (f" [field {error['field']}]" if error.get("field") else ""))
        self.code = error.get("code")
        self.name = error.get("name")
        self.field = error.get("field")


def default_library() -> Path:
    """``$ACESTEP_FFI_LIB``, else ``lib/libacestep_runtime.so`` of the unpacked release archive this file came in,
    else the cargo target folder (``$CARGO_TARGET_DIR``, else the repository's ``target/``)."""
    env = os.environ.get("ACESTEP_FFI_LIB")
    if env:
        return Path(env)
    name = {"darwin": "libacestep_runtime.dylib", "win32": "acestep_runtime.dll"}.get(sys.platform,
                                                                                     "libacestep_runtime.so")
    here = Path(__file__).resolve()
    unpacked = here.parents[2] / "lib" / name  # the `make dist` archive: lib/ beside examples/
    if unpacked.is_file():
        return unpacked
    base = os.environ.get("CARGO_TARGET_DIR") or here.parents[3] / "target"
    return Path(base) / "release" / name


def _ptr(array: np.ndarray):
    return array.ctypes.data_as(_F32P)


class Library:
    """The library's entry points with their C signatures; every status is checked."""

    def __init__(self, path: Path):
        self.path = Path(path)
        lib = ctypes.CDLL(str(self.path))
        sig = {
            "ace_abi_version": (ctypes.c_uint32, []),
            "ace_version_string": (ctypes.c_void_p, []),
            "ace_string_free": (None, [ctypes.c_void_p]),
            "ace_last_error": (ctypes.c_void_p, []),
            "ace_create_context": (_CTX, [_STR]),
            "ace_free_context": (None, [_CTX]),
            "ace_prepare_request": (ctypes.c_int32, [_CTX, _STR, _OUT_STR]),
            "ace_noise": (ctypes.c_int32, [_CTX, ctypes.POINTER(ctypes.c_uint64), _SIZE, _SIZE, _F32P, _SIZE]),
            "ace_context_latents": (ctypes.c_int32, [_CTX, _SIZE, _SIZE, _F32P, _SIZE]),
            "ace_timbre_reference": (ctypes.c_int32, [_CTX, _SIZE, _F32P, _SIZE]),
            "ace_prepare_step_inputs": (ctypes.c_int32, [_CTX, _STR, _F32P, _SIZE, _OUT_STR]),
            "ace_scheduler_step": (ctypes.c_int32, [_CTX, _F32P, _F32P, _SIZE, ctypes.c_double, _F32P]),
            "ace_tile_window": (ctypes.c_int32, [_CTX, _F32P, _SIZE, _SIZE, _SIZE, _SIZE, _SIZE, _F32P, _SIZE]),
            "ace_tile_trim": (ctypes.c_int32, [_CTX, _SIZE, _SIZE, _SIZE, ctypes.POINTER(_SIZE),
                                               ctypes.POINTER(_SIZE)]),
            "ace_postprocess_audio": (ctypes.c_int32, [_CTX, _F32P, _SIZE, _SIZE, _F32P]),
            "ace_write_wav": (ctypes.c_int32, [_CTX, _STR, _F32P, _SIZE, _SIZE]),
            "ace_lm_reset": (ctypes.c_int32, [_CTX, _STR, _OUT_STR]),
            "ace_apply_lm_constraints": (ctypes.c_int32, [_CTX, _F32P, _SIZE, _F32P]),
            "ace_lm_update": (ctypes.c_int32, [_CTX, ctypes.c_uint32]),
            "ace_finalize_metadata": (ctypes.c_int32, [_CTX, ctypes.POINTER(ctypes.c_int64), _SIZE, _OUT_STR]),
            "ace_prepare_planned_request": (ctypes.c_int32, [_CTX, _STR, ctypes.POINTER(ctypes.c_int64), _SIZE,
                                                             _OUT_STR]),
        }
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.lib = lib
        abi = lib.ace_abi_version()
        if abi != ABI_VERSION:
            raise RuntimeError(f"{self.path} implements ABI {abi}, this host speaks ABI {ABI_VERSION}")

    def take_string(self, ptr: int | None) -> str | None:
        """Copy a library-owned string and free it (the ownership rule of every returned char *)."""
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr).decode("utf-8")
        finally:
            self.lib.ace_string_free(ptr)

    def last_error(self) -> dict | None:
        text = self.take_string(self.lib.ace_last_error())
        return json.loads(text) if text else None

    def check(self, call: str, status: int) -> None:
        if status != 0:
            raise AceError(call, self.last_error() or {"code": status, "message": "no error recorded"})

    def version(self) -> str:
        return self.take_string(self.lib.ace_version_string()) or ""

    def call_json(self, name: str, *args) -> dict:
        """Call an entry point whose last argument is ``char **out_json``; the parsed, freed JSON."""
        out = ctypes.c_void_p()
        self.check(name, getattr(self.lib, name)(*args, ctypes.byref(out)))
        return json.loads(self.take_string(out.value))


class Context:
    """One ``AceContext``: create on enter / construction, free on ``close``."""

    def __init__(self, library: Library, config: dict):
        self.library = library
        lib = library.lib
        self.handle = lib.ace_create_context(json.dumps(config).encode("utf-8"))
        if not self.handle:
            raise AceError("ace_create_context", library.last_error() or {})

    def close(self) -> None:
        if self.handle:
            self.library.lib.ace_free_context(self.handle)
            self.handle = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _lib(self):
        return self.library.lib

    def prepare_request(self, case: dict) -> dict:
        return self.library.call_json("ace_prepare_request", self.handle, json.dumps(case).encode("utf-8"))

    def noise(self, seeds: list[int], frames: int) -> np.ndarray:
        out = np.empty((len(seeds), frames, 64), dtype=np.float32)
        arr = (ctypes.c_uint64 * len(seeds))(*seeds)
        self.library.check("ace_noise", self._lib().ace_noise(self.handle, arr, len(seeds), frames, _ptr(out),
                                                              out.size))
        return out

    def context_latents(self, shape: list[int]) -> np.ndarray:
        out = np.empty(shape, dtype=np.float32)
        self.library.check("ace_context_latents", self._lib().ace_context_latents(
            self.handle, shape[1], shape[0], _ptr(out), out.size))
        return out

    def timbre_reference(self, shape: list[int]) -> np.ndarray:
        out = np.empty(shape, dtype=np.float32)
        self.library.check("ace_timbre_reference", self._lib().ace_timbre_reference(
            self.handle, shape[0], _ptr(out), out.size))
        return out

    def step_inputs(self, state: dict, batch: int) -> tuple[np.ndarray, dict]:
        t = np.empty((batch,), dtype=np.float32)
        info = self.library.call_json("ace_prepare_step_inputs", self.handle, json.dumps(state).encode("utf-8"),
                                      _ptr(t), batch)
        return t, info

    def scheduler_step(self, xt: np.ndarray, vt: np.ndarray, dt: float) -> np.ndarray:
        xt = np.ascontiguousarray(xt, dtype=np.float32)
        vt = np.ascontiguousarray(vt, dtype=np.float32)
        if xt.shape != vt.shape:
            raise ValueError(f"xt {xt.shape} and vt {vt.shape} differ")
        out = np.empty_like(xt)
        self.library.check("ace_scheduler_step", self._lib().ace_scheduler_step(
            self.handle, _ptr(xt), _ptr(vt), xt.size, dt, _ptr(out)))
        return out

    def tile_window(self, latents: np.ndarray, item: int, tile: int, width: int) -> np.ndarray:
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        out = np.empty((1, 64, width), dtype=np.float32)
        self.library.check("ace_tile_window", self._lib().ace_tile_window(
            self.handle, _ptr(latents), latents.size, latents.shape[0], latents.shape[1], item, tile, _ptr(out),
            out.size))
        return out

    def tile_trim(self, frames: int, tile: int, decoded_len: int) -> tuple[int, int]:
        start, end = _SIZE(), _SIZE()
        self.library.check("ace_tile_trim", self._lib().ace_tile_trim(
            self.handle, frames, tile, decoded_len, ctypes.byref(start), ctypes.byref(end)))
        return start.value, end.value

    def postprocess_audio(self, audio: np.ndarray) -> np.ndarray:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        out = np.empty_like(audio)
        self.library.check("ace_postprocess_audio", self._lib().ace_postprocess_audio(
            self.handle, _ptr(audio), audio.size, audio.shape[0], _ptr(out)))
        return out

    def write_wav(self, path: Path, item: np.ndarray) -> None:
        item = np.ascontiguousarray(item, dtype=np.float32)
        self.library.check("ace_write_wav", self._lib().ace_write_wav(
            self.handle, str(path).encode("utf-8"), _ptr(item), item.size, item.shape[0]))


    # ---- the LM planner's host logic (the host runs lm_prefill / lm_decode and picks tokens)

    def lm_reset(self, options: dict) -> dict:
        return self.library.call_json("ace_lm_reset", self.handle, json.dumps(options).encode("utf-8"))

    def apply_lm_constraints(self, logits: np.ndarray) -> np.ndarray:
        logits = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
        out = np.empty_like(logits)
        self.library.check("ace_apply_lm_constraints", self._lib().ace_apply_lm_constraints(
            self.handle, _ptr(logits), logits.size, _ptr(out)))
        return out

    def lm_update(self, token: int) -> None:
        self.library.check("ace_lm_update", self._lib().ace_lm_update(self.handle, int(token)))

    def finalize_metadata(self, tokens) -> dict:
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        return self.library.call_json("ace_finalize_metadata", self.handle,
                                      ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), ids.size)

    def prepare_planned_request(self, case: dict, tokens) -> dict:
        """Simple mode's text2music request: the case with the planner's fields (see ``ace_prepare_planned_request``)."""
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        return self.library.call_json("ace_prepare_planned_request", self.handle, json.dumps(case).encode("utf-8"),
                                      ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), ids.size)


def _margin(constrained: np.ndarray) -> float:
    """Top-1 minus top-2 of the allowed logits (inf where one token is allowed): how close greedy was to a tie."""
    finite = constrained[np.isfinite(constrained)]
    if finite.size < 2:
        return float("inf")
    top2 = np.partition(finite, finite.size - 2)[-2:]
    return float(top2[1] - top2[0])


def session_options() -> ort.SessionOptions:
    """A copy of the Python ORT runtime's options (``acestep_ort.session_manager.SessionConfig``), so this host
    runs standalone: same threads, optimization level, sequential execution, no CPU arena; identical options are
    what makes the results bit-equal (``tests/test_ffi.py`` holds the two equal)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("ACESTEP_ORT_THREADS", "0"))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class Host:
    """ONNX Runtime sessions of one exported folder plus a library context: runs whole cases."""

    def __init__(self, onnx_dir: Path, library: Library | Path | None = None,
                 options: ort.SessionOptions | None = None, providers: list[str] | None = None):
        self.onnx_dir = Path(onnx_dir)
        self.library = library if isinstance(library, Library) else Library(library or default_library())
        self.context = Context(self.library, {"onnx_dir": str(self.onnx_dir)})
        opts = options or session_options()
        self._open = lambda g: ort.InferenceSession(str(self.onnx_dir / f"{g}.onnx"), sess_options=opts,
                                                    providers=providers or ["CPUExecutionProvider"])
        self.sessions = {g: self._open(g) for g in GRAPHS}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def _input_dtype(self, graph: str, name: str):
        for io in self.sessions[graph].get_inputs():
            if io.name == name:
                return _ORT_TYPES[io.type]
        raise KeyError(f"{graph}.onnx has no input {name!r}")

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if graph not in self.sessions:
            self.sessions[graph] = self._open(graph)  # the LM graphs: only simple mode needs them
        return self.sessions[graph].run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})

    # ---- the 5 Hz LM (simple mode): prefill once, then one token at a time on the KV cache

    def lm_start(self, prompt_ids) -> np.ndarray:
        """The prompt through ``lm_prefill``; the last position's logits ``[V]`` (the cache is kept)."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        logits, keys, values = self.run("lm_prefill", {"input_ids": ids})
        self._cache = (keys, values)
        return np.asarray(logits[0], dtype=np.float32).reshape(-1)

    def lm_next(self, token: int) -> np.ndarray:
        """One token through ``lm_decode`` on the cached keys/values (``present_*`` fed back as ``past_*``)."""
        if self._cache is None:
            raise RuntimeError("lm_next before lm_start")
        keys, values = self._cache
        logits, keys, values = self.run("lm_decode", {"input_ids": np.asarray([[int(token)]], dtype=np.int64),
                                                      "past_keys": keys, "past_values": values})
        self._cache = (keys, values)
        return np.asarray(logits[0], dtype=np.float32).reshape(-1)

    def lm_teacher_logits(self, prompt_ids, tokens) -> np.ndarray:
        """Logits ``[steps, V]`` of every step with the reference tokens fed in (no choice made by the host)."""
        rows = [self.lm_start(prompt_ids)]
        rows += [self.lm_next(int(t)) for t in np.asarray(tokens).reshape(-1)[:-1]]
        return np.stack(rows)

    def plan(self, case: dict) -> dict[str, np.ndarray]:
        """The planner of a simple_mode case, greedy (the parity mode): the library builds the prompt and masks
        every row (``ace_lm_reset``, ``ace_apply_lm_constraints``, ``ace_lm_update``), the host picks the
        argmax and stops after EOS/pad, the library parses the stream (``ace_finalize_metadata``). Returns the
        LM capture points (the names, dtypes and shapes of the other runtimes')."""
        ctx = self.context
        duration = case.get("duration")
        info = ctx.lm_reset({"query": case.get("query", ""), "instrumental": bool(case.get("instrumental", False)),
                             "vocal_language": case.get("language"),
                             "max_duration": int(duration) if duration and duration > 0 else None})
        prompt_ids = np.asarray(info["prompt_ids"], dtype=np.int64)
        stop = {int(info["eos_token_id"]), int(info["pad_token_id"])}
        tokens, raws, allowed, margins = [], [], [], []
        logits = self.lm_start(prompt_ids)
        for _ in range(int(info["max_new_tokens"])):
            constrained = ctx.apply_lm_constraints(logits)
            allowed.append(np.isfinite(constrained))
            margins.append(_margin(constrained))
            token = int(np.argmax(constrained))
            ctx.lm_update(token)
            raws.append(logits)
            tokens.append(token)
            if token in stop:
                break
            logits = self.lm_next(token)
        final = ctx.finalize_metadata(tokens)
        raw = np.stack(raws).astype(np.float32)
        mask = np.stack(allowed)
        top_ids = np.argsort(-raw, axis=1, kind="stable")[:, :min(TOPK_STORED, raw.shape[1])]
        return {
            "lm_prompt_ids": prompt_ids,
            "lm_tokens": np.asarray(tokens, dtype=np.int64),
            "lm_logits": raw,
            "lm_topk_ids": top_ids.astype(np.int64),
            "lm_topk_logits": np.take_along_axis(raw, top_ids, axis=1).astype(np.float32),
            "lm_allowed": mask,
            "lm_mask_digests": np.asarray([hashlib.sha256(np.packbits(row).tobytes()).hexdigest()[:16]
                                           for row in mask]),
            "lm_margins": np.asarray(margins, dtype=np.float64),
            "lm_text": np.asarray(final["text"]),
            "lm_metadata": np.asarray(final["metadata_json"]),
        }

    def dit(self, xt, t, encoder_hidden_states, context_latents) -> np.ndarray:
        t = np.asarray(t, dtype=np.float32)
        return self.run("dit_decoder", {"hidden_states": np.asarray(xt, dtype=np.float32), "timestep": t,
                                        "timestep_r": t,
                                        "encoder_hidden_states": np.asarray(encoder_hidden_states, np.float32),
                                        "context_latents": np.asarray(context_latents, np.float32)})[0]

    def run_case(self, case: dict) -> dict[str, np.ndarray]:
        """Every capture point of one case (the names, dtypes and shapes of py_ort's): text2music, or simple
        mode (the planner, then text2music on the request the library builds from the planner's tokens)."""
        if case.get("task") == "simple_mode":
            lm = self.plan(case)
            caps = self.run_request(self.context.prepare_planned_request(case, lm["lm_tokens"]), case)
            caps.update(lm)
            return caps
        return self.run_request(self.context.prepare_request(case), case)

    def run_request(self, req: dict, case: dict) -> dict[str, np.ndarray]:
        """text2music on a prepared request (``ace_prepare_request`` / ``ace_prepare_planned_request``)."""
        ctx = self.context
        caps: dict[str, np.ndarray] = {}
        for name in ("text_token_ids", "lyric_token_ids"):
            caps[name] = np.asarray(req[name]["data"], dtype=np.int64).reshape(req[name]["shape"])
        for name in ("text_attention_mask", "lyric_attention_mask"):
            caps[name] = np.asarray(req[name]["data"], dtype=np.int64).reshape(req[name]["shape"]).astype(bool)
        caps["text_hidden_states"] = self.run("text_encoder", {"input_ids": caps["text_token_ids"]})[0]
        caps["lyric_hidden_states"] = self.run("lyric_embedding", {"input_ids": caps["lyric_token_ids"]})[0]
        timbre = ctx.timbre_reference(req["timbre_reference_shape"])
        dtype = self._input_dtype
        enc, enc_mask = self.run("condition_encoder", {
            "text_hidden_states": caps["text_hidden_states"],
            "text_attention_mask": caps["text_attention_mask"].astype(dtype("condition_encoder",
                                                                            "text_attention_mask")),
            "lyric_hidden_states": caps["lyric_hidden_states"],
            "lyric_attention_mask": caps["lyric_attention_mask"].astype(dtype("condition_encoder",
                                                                              "lyric_attention_mask")),
            "timbre_reference": timbre})
        caps["encoder_hidden_states"] = enc.astype(np.float32)
        caps["encoder_attention_mask"] = enc_mask.astype(bool)
        caps["context_latents"] = ctx.context_latents(req["context_latents_shape"])
        caps["schedule"] = np.asarray(req["schedule"], dtype=np.float32)
        frames, batch = req["latent_frames"], req["batch"]
        xt = ctx.noise(req["seeds"], frames)
        caps["noise"] = xt.copy()
        state = {"shift": case.get("shift", 1.0), "timesteps": case.get("timesteps")}
        xs, vs = [], []
        for i in range(req["steps"]):
            t, info = ctx.step_inputs({**state, "step": i}, batch)
            xs.append(xt)
            vt = self.dit(xt, t, caps["encoder_hidden_states"], caps["context_latents"]).astype(np.float32)
            vs.append(vt)
            xt = ctx.scheduler_step(xt, vt, info["dt"])
        caps["xt"], caps["vt"], caps["pred_latents"] = np.stack(xs), np.stack(vs), xt
        if not np.all(np.isfinite(xt)):
            raise FloatingPointError("pred_latents contain NaN/Inf; refusing to decode (upstream raises here too)")
        items = []
        for b in range(batch):
            pieces = []
            for k, tile in enumerate(req["tiles"]):
                window = ctx.tile_window(xt, b, k, tile["win_end"] - tile["win_start"])
                audio = self.run("vae_decoder", {"latents": window})[0]
                start, end = ctx.tile_trim(frames, k, audio.shape[-1])
                pieces.append(audio[:, :, start:end])
            items.append(np.concatenate(pieces, axis=-1))
        caps["audio_decoded"] = np.concatenate(items, axis=0).astype(np.float32)
        caps["audio"] = ctx.postprocess_audio(caps["audio_decoded"])
        return caps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-dir", type=Path, required=True, help="exported ONNX folder (acestep-export)")
    parser.add_argument("--case", type=Path, required=True, help="a case file (cases/*.json)")
    parser.add_argument("--out", type=Path, help="wav file of the first item")
    parser.add_argument("--dump", type=Path, help="npz of every capture point")
    parser.add_argument("--lib", type=Path, help="the library (default: $ACESTEP_FFI_LIB or the cargo target)")
    args = parser.parse_args(argv)
    try:
        host = Host(args.onnx_dir, args.lib)
        case = json.loads(args.case.read_text(encoding="utf-8"))
        caps = host.run_case(case)
        for target in (args.out, args.dump):
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
        if args.out:
            host.context.write_wav(args.out, caps["audio"][0])
        if args.dump:
            np.savez(args.dump, **caps)
    except (AceError, OSError, ValueError, RecursionError, FloatingPointError) as exc:
        print(f"acestep_ffi: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # ONNX Runtime's own errors (a graph it cannot load): its first line, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"acestep_ffi: error: ONNX Runtime: {first}", file=sys.stderr)
        return 2
    print(json.dumps({"library": host.library.version(), "case": case.get("id"),
                      "audio_shape": list(caps["audio"].shape)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
