"""The C ABI tried exhaustively, one table row per entry point of ``include/acestep_runtime.h``.

The header is parsed (every ``ace_*`` prototype: return type, parameter types and names; a prototype that does not
parse, or an entry point without a row in ``RECIPES``, is a failing case of its own, so a new function cannot be
forgotten). From each prototype the cases are derived mechanically:

* ``baseline``: every argument valid (a context of the exported ONNX folder, real case JSON, buffers of the right
  length): success, no error left behind. It proves that what the other cases change is what they fail on.
* every pointer argument NULL, the others valid: ``null_pointer`` naming the argument (``ace_create_context``:
  NULL and the error; the free functions: NULL is ignored);
* every typed buffer and out-pointer misaligned by one byte: ``invalid_argument`` naming it;
* every ``const char *``: invalid UTF-8 (``invalid_utf8``); every JSON text: a syntax error and, for the objects,
  a JSON array (``invalid_json``), each naming the argument;
* every length (a ``size_t`` a buffer is sized by, as the header's ``# Safety`` lines say: `` `xt`, `vt` hold
  `len` floats``; a pointer they do not document fails a test of its own): zero, one short, one long, ``SIZE_MAX``, and each of its
  buffers NULL with length zero: success or an error naming the length or a buffer of the call, never
  ``SIZE_MAX`` accepted; every other ``size_t`` / ``uint32_t`` zero and at its maximum, every ``double`` NaN and
  +-inf: success or an error naming it.

Every failure must leave a well-formed JSON error (``{"code", "name", "message", "field"}``, code = status, never
``internal``), every ``char **out_json`` must be NULL after an error. Buffers are fenced: each ends where a
``PROT_NONE`` page begins, so a read or write past the length the call was given is a segfault. The calls run in
child processes (this file run as a script), results streamed line by line: a crash is a failing case naming the
function and the argument, the remaining cases go on in a fresh child.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import mmap
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = REPO / "include" / "acestep_runtime.h"
CASES = REPO / "cases"
SIZE_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
PAGE = mmap.PAGESIZE
FREE_FUNCTIONS = ("ace_string_free", "ace_free_context")
CHILD_TIMEOUT_S = 300

# ------------------------------------------------------------------------------------------- the header


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    base: str  # the C type without const / struct / stars
    stars: int
    const: bool

    @property
    def is_pointer(self) -> bool:
        return self.stars > 0

    @property
    def kind(self) -> str:
        """ctx, owned_ctx, text, owned_string, slot (char **), buffer (typed pointer), scalar."""
        if self.base == "AceContext":
            return "ctx" if self.const else "owned_ctx"
        if self.base == "char" and self.stars == 1:
            return "text" if self.const else "owned_string"
        if self.base == "char" and self.stars == 2:
            return "slot"
        return "buffer" if self.stars else "scalar"

    @property
    def is_json(self) -> bool:
        return self.kind == "text" and (self.name == "json" or self.name.endswith("_json"))


@dataclasses.dataclass(frozen=True)
class Function:
    name: str
    ret: str
    params: tuple[Param, ...]


KNOWN_TYPES = {"void", "char", "uint32_t", "size_t", "double", "float", "int64_t", "uint64_t", "AceStatus",
               "AceContext"}
_PROTO = re.compile(r"^(?P<ret>[A-Za-z_][\w \t]*?\**)\s*\b(?P<name>ace_\w+)\((?P<params>[^;{}()]*)\);", re.M)
_PARAM = re.compile(r"^(?P<const>const\s+)?(?:struct\s+)?(?P<base>\w+)\s*(?P<stars>\**)\s*(?P<name>\w+)$")


def _strip_comments(text: str) -> str:
    # One pass, leftmost first: a `/*` inside a line comment (`cases/*.json`) opens no block comment.
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def parse_header(text: str) -> tuple[list[Function], dict[str, str]]:
    """The ``ace_*`` prototypes of the header, and ``{name: why}`` for every ``ace_*(`` that did not parse."""
    code = _strip_comments(text)
    functions, problems = [], {}
    for m in _PROTO.finditer(code):
        name, params = m["name"], []
        ret = " ".join(m["ret"].split())
        raw = " ".join(m["params"].split())
        for piece in ([] if raw == "void" else raw.split(",")):
            p = _PARAM.match(piece.strip())
            if p is None or p["base"] not in KNOWN_TYPES:
                problems[name] = f"parameter {piece.strip()!r} does not parse (or has an unknown type)"
                break
            params.append(Param(p["name"], p["base"], len(p["stars"]), bool(p["const"])))
        ret_base = ret.replace("struct ", "").rstrip("* ").split()[-1]
        if ret_base not in KNOWN_TYPES:
            problems[name] = f"return type {ret!r} is unknown"
        if name not in problems:
            functions.append(Function(name, ret, tuple(params)))
    parsed = {f.name for f in functions} | set(problems)
    for name in re.findall(r"\b(ace_\w+)\s*\(", code):
        if name not in parsed:
            problems[name] = "a prototype the parser did not recognise"
    return functions, problems


def status_names(text: str) -> dict[int, str]:
    return {int(code): name.lower() for name, code in re.findall(r"\bACE_STATUS_(\w+)\s*=\s*(\d+)", text)}


# ------------------------------------------------------------------------------------------- argument recipes


@dataclasses.dataclass(frozen=True)
class Buf:
    """A fenced typed buffer: ``count`` elements, or as many as the length parameter ``length`` says."""

    ctype: Any
    length: str | None = None
    values: tuple = ()
    count: int = 1


CTX, SLOT, OWNED_STRING, OWNED_CTX = "CTX", "SLOT", "OWNED_STRING", "OWNED_CTX"
F32, F64, U64, I64, SIZE = ctypes.c_float, ctypes.c_double, ctypes.c_uint64, ctypes.c_int64, ctypes.c_size_t


@dataclasses.dataclass
class Env:
    """What the recipes need from the live library: the context and facts of the exported folder."""

    onnx_dir: Path
    tmp: Path
    frames: int  # latent frames of text2music_01
    channels: int  # C of the silence latent
    tile0: tuple[int, int]  # win_start, win_end of its tile 0
    vocab: int  # the LM's vocabulary size


def _text(path: Path) -> bytes:
    return path.read_bytes()


def recipes(env: Env) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Valid arguments of every entry point, and the set-up it needs (``lm``: a generation started)."""
    frames, c, (w0, w1) = env.frames, env.channels, env.tile0
    config = json.dumps({"onnx_dir": str(env.onnx_dir)}).encode()
    t2m, simple = _text(CASES / "text2music_01.json"), _text(CASES / "simple_mode_01.json")
    return {
        "ace_abi_version": ({}, None),
        "ace_version_string": ({}, None),
        "ace_string_free": ({"s": OWNED_STRING}, None),
        "ace_last_error": ({}, None),
        "ace_create_context": ({"config_json": config}, None),
        "ace_free_context": ({"ctx": OWNED_CTX}, None),
        "ace_prepare_request": ({"ctx": CTX, "case_json": t2m, "out_json": SLOT}, None),
        "ace_noise": ({"ctx": CTX, "seeds": Buf(U64, "n_seeds", (42, 7)), "n_seeds": 2, "frames": 3,
                       "out": Buf(F32, "out_len"), "out_len": 2 * 3 * 64}, None),
        "ace_context_latents": ({"ctx": CTX, "frames": 4, "batch": 2, "out": Buf(F32, "out_len"),
                                 "out_len": 2 * 4 * 2 * c}, None),
        "ace_timbre_reference": ({"ctx": CTX, "batch": 1, "out": Buf(F32, "out_len"), "out_len": 750 * c}, None),
        "ace_prepare_step_inputs": ({"ctx": CTX, "state_json": b'{"shift": 3.0, "step": 1}',
                                     "out_timestep": Buf(F32, "out_len"), "out_len": 2, "out_json": SLOT}, None),
        "ace_scheduler_step": ({"ctx": CTX, "xt": Buf(F32, "len", (0.5, -1.0)), "vt": Buf(F32, "len", (0.25,)),
                                "len": 8, "dt": 0.1, "out_xt": Buf(F32, "len")}, None),
        "ace_tile_window": ({"ctx": CTX, "latents": Buf(F32, "latents_len", (0.1, 0.2, 0.3)),
                             "latents_len": frames * 64, "batch": 1, "frames": frames, "item": 0, "tile": 0,
                             "out": Buf(F32, "out_len"), "out_len": 64 * (w1 - w0)}, None),
        "ace_tile_trim": ({"ctx": CTX, "frames": frames, "tile": 0, "decoded_len": (w1 - w0) * 1920,
                           "out_start": Buf(SIZE), "out_end": Buf(SIZE)}, None),
        "ace_postprocess_audio": ({"ctx": CTX, "audio": Buf(F32, "len", (0.5, -0.25, 1.5)), "len": 2 * 2 * 50,
                                   "batch": 2, "out": Buf(F32, "len")}, None),
        "ace_write_wav": ({"ctx": CTX, "path": str(env.tmp / "abi.wav").encode(),
                           "audio": Buf(F32, "len", (0.5, -0.25)), "len": 2 * 40, "channels": 2}, None),
        "ace_json_f64": ({"json": b'{"a": [1.5, [2, 3]], "b": true}', "path": b"a", "out": Buf(F64, "capacity"),
                          "capacity": 3, "out_count": Buf(SIZE)}, None),
        "ace_json_i64": ({"json": b'{"a": [1, [2, 3]], "b": 4}', "path": b"a", "out": Buf(I64, "capacity"),
                          "capacity": 3, "out_count": Buf(SIZE)}, None),
        "ace_lm_reset": ({"ctx": CTX, "options_json": b'{"query": "a calm piano piece"}', "out_json": SLOT}, None),
        "ace_apply_lm_constraints": ({"ctx": CTX, "logits": Buf(F32, "vocab_size", (0.5, -0.5, 0.25)),
                                      "vocab_size": env.vocab, "out_masked_logits": Buf(F32, "vocab_size")}, "lm"),
        "ace_lm_update": ({"ctx": CTX, "token_id": "ALLOWED_TOKEN"}, "lm"),
        "ace_finalize_metadata": ({"ctx": CTX, "token_ids": Buf(I64, "len", (1, 2, 3)), "len": 3, "out_json": SLOT},
                                  "lm"),
        "ace_prepare_planned_request": ({"ctx": CTX, "case_json": simple, "token_ids": Buf(I64, "len", (1, 2, 3)),
                                         "len": 3, "out_json": SLOT}, "lm"),
    }


RECIPE_NAMES = (
    "ace_abi_version", "ace_version_string", "ace_string_free", "ace_last_error", "ace_create_context",
    "ace_free_context", "ace_prepare_request", "ace_noise", "ace_context_latents", "ace_timbre_reference",
    "ace_prepare_step_inputs", "ace_scheduler_step", "ace_tile_window", "ace_tile_trim", "ace_postprocess_audio",
    "ace_write_wav", "ace_json_f64", "ace_json_i64", "ace_lm_reset", "ace_apply_lm_constraints", "ace_lm_update",
    "ace_finalize_metadata", "ace_prepare_planned_request",
)


def doc_comments(text: str) -> dict[str, str]:
    """The ``//`` comment block right above each ``ace_*`` prototype (``As `ace_x`.`` resolved to ace_x's)."""
    blocks, lines = {}, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            lines.append(stripped[2:].strip())
            continue
        m = re.match(r"^[A-Za-z_][\w \t*]*?\b(ace_\w+)\(", stripped)
        if m:
            blocks[m[1]] = " ".join(lines)
        lines = []
    for name, doc in blocks.items():
        alias = re.search(r"\bAs `(ace_\w+)`", doc)
        if alias and alias[1] in blocks:
            blocks[name] = doc + " " + blocks[alias[1]]
    return blocks


_HOLDS = re.compile(r"((?:`\w+`(?:,\s*)?)+)\s+holds?\s+`(\w+)`")


def documented_lengths(text: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{function: {length: buffers}}`` from the ``# Safety`` lines (`` `xt`, `vt` hold `len` floats``)."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, doc in doc_comments(text).items():
        pairs: dict[str, tuple[str, ...]] = {}
        for bufs, length in _HOLDS.findall(doc.split("# Safety", 1)[-1]):
            names = tuple(re.findall(r"`(\w+)`", bufs))
            pairs[length] = tuple(dict.fromkeys(pairs.get(length, ()) + names))
        if pairs:
            out[name] = pairs
    return out


# ------------------------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    function: str
    kind: str  # baseline, null, misaligned, utf8, json-syntax, json-type, length, scalar, parse, recipe
    param: str | None = None
    changes: tuple[tuple[str, Any], ...] = ()  # (param, value): None = NULL, an int = that value
    detail: str = ""


def build_cases(functions: list[Function], problems: dict[str, str]) -> list[Case]:
    cases = [Case(f"ffi-abi-{name}-parse", name, "parse", detail=why) for name, why in sorted(problems.items())]
    for fn in functions:
        def case(suffix: str, kind: str, param: str | None = None, changes=(), detail="", fn=fn) -> None:
            cases.append(Case(f"ffi-abi-{fn.name}-{suffix}", fn.name, kind, param, tuple(changes), detail))

        if fn.name not in RECIPE_NAMES:
            case("recipe", "recipe", detail="no valid-argument recipe: add one to RECIPES in this file")
            continue
        case("baseline", "baseline")
        lengths = LENGTHS.get(fn.name, {})
        for p in fn.params:
            if p.is_pointer:
                case(f"{p.name}-null", "null", p.name, [(p.name, None)])
            if p.kind in ("buffer", "slot"):
                case(f"{p.name}-misaligned", "misaligned", p.name, [(p.name, "MISALIGNED")])
            if p.kind == "text":
                case(f"{p.name}-utf8", "utf8", p.name, [(p.name, b"{\"a\": \"\xff\xfe\xc3\x28\"}")])
            if p.is_json:
                case(f"{p.name}-json-syntax", "json-syntax", p.name, [(p.name, b'{"shift": 3.0, "step": ')])
                case(f"{p.name}-json-empty", "json-syntax", p.name, [(p.name, b"")])
                if p.name != "json":  # ace_json_* read any JSON document; the others take an object
                    case(f"{p.name}-json-type", "json-type", p.name, [(p.name, b"[1, 2]")])
            if p.kind == "scalar" and p.base in ("size_t", "uint32_t"):
                top = SIZE_MAX if p.base == "size_t" else U32_MAX
                if p.name in lengths:
                    for variant in ("zero", "short", "long", "max"):
                        case(f"{p.name}-{variant}", "length", p.name, [(p.name, variant.upper())], detail=variant)
                    for buf in lengths[p.name]:
                        case(f"{buf}-null-{p.name}-zero", "length", p.name, [(buf, None), (p.name, "ZERO")],
                             detail="null-zero")
                else:
                    case(f"{p.name}-zero", "scalar", p.name, [(p.name, 0)])
                    case(f"{p.name}-max", "scalar", p.name, [(p.name, top)])
            if p.kind == "scalar" and p.base == "double":
                for label, value in (("nan", float("nan")), ("inf", float("inf")), ("neg-inf", float("-inf"))):
                    case(f"{p.name}-{label}", "scalar", p.name, [(p.name, value)])
    return cases


HEADER_TEXT = HEADER.read_text(encoding="utf-8")
FUNCTIONS, PROBLEMS = parse_header(HEADER_TEXT)
# Which size_t sizes which buffer, as the header documents it: the length cases come from here.
LENGTHS = documented_lengths(HEADER_TEXT)
CASE_LIST = build_cases(FUNCTIONS, PROBLEMS)
CASE_IDS = [c.id for c in CASE_LIST]

# ------------------------------------------------------------------------------------------- the child process

PROT_NONE, PROT_RW = 0, 3
MAP_PRIVATE_ANON = 0x02 | 0x20


class Fence:
    """Memory that ends where a PROT_NONE page begins: an access past ``nbytes`` is a segfault."""

    def __init__(self, libc, nbytes: int, shift: int = 0):
        self.libc = libc
        pages = (nbytes + shift + PAGE - 1) // PAGE + 1
        self.size = pages * PAGE
        base = libc.mmap(None, self.size, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise MemoryError(f"mmap of {self.size} bytes failed")
        self.base = base
        end = base + (pages - 1) * PAGE
        if libc.mprotect(ctypes.c_void_p(end), PAGE, PROT_NONE) != 0:
            raise OSError("mprotect failed")
        self.addr = end - nbytes - shift

    def free(self) -> None:
        self.libc.munmap(ctypes.c_void_p(self.base), self.size)


class Child:
    """The library loaded with the argument and return types the parsed header gives, a live context, the recipes."""

    def __init__(self, lib_path: Path, onnx_dir: Path, tmp: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_long]
        self.libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.lib = ctypes.CDLL(str(lib_path))
        self.functions = {f.name: f for f in FUNCTIONS}
        self.statuses = status_names(HEADER_TEXT)
        self.missing = {fn.name for fn in FUNCTIONS if not hasattr(self.lib, fn.name)}
        for fn in FUNCTIONS:
            if fn.name in self.missing:
                continue
            cfn = getattr(self.lib, fn.name)
            cfn.argtypes = [self._ctype(p.base, p.stars) for p in fn.params]
            cfn.restype = self._ctype(fn.ret.replace("struct ", "").replace("*", "").split()[-1], fn.ret.count("*"))
        self.lib.ace_last_error.restype = ctypes.c_void_p
        config = json.dumps({"onnx_dir": str(onnx_dir)}).encode()
        self.ctx = self.lib.ace_create_context(config)
        if not self.ctx:
            raise RuntimeError(f"ace_create_context: {self.last_error()}")
        request = self.json_call("ace_prepare_request", _text(CASES / "text2music_01.json"))
        info = self.json_call("ace_lm_reset", b'{"query": "x"}')
        self.env = Env(onnx_dir, tmp, request["latent_frames"], request["timbre_reference_shape"][2],
                       (request["tiles"][0]["win_start"], request["tiles"][0]["win_end"]), info["vocab_size"])
        self.recipes = recipes(self.env)
        self.calls = 0

    @staticmethod
    def _ctype(base: str, stars: int) -> Any:
        """The ctypes type of a header type (every pointer as a raw address)."""
        if stars:
            return ctypes.c_void_p
        return {"void": None, "uint32_t": ctypes.c_uint32, "size_t": ctypes.c_size_t, "double": ctypes.c_double,
                "float": ctypes.c_float, "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
                "AceStatus": ctypes.c_int32}[base]

    def take(self, ptr: int | None) -> str | None:
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr).decode("utf-8")
        finally:
            self.lib.ace_string_free(ptr)

    def last_error(self) -> str | None:
        return self.take(self.lib.ace_last_error())

    def json_call(self, name: str, text: bytes) -> dict:
        out = ctypes.c_void_p()
        status = getattr(self.lib, name)(self.ctx, text, ctypes.addressof(out))
        if status != 0:
            raise RuntimeError(f"{name}: {self.last_error()}")
        return json.loads(self.take(out.value) or "null")

    def allowed_token(self) -> int:
        """A token the FSM allows now (after a reset)."""
        n = self.env.vocab
        logits, masked = (F32 * n)(), (F32 * n)()
        status = self.lib.ace_apply_lm_constraints(self.ctx, ctypes.addressof(logits), n, ctypes.addressof(masked))
        if status != 0:
            raise RuntimeError(f"ace_apply_lm_constraints: {self.last_error()}")
        return next(i for i in range(n) if masked[i] != float("-inf"))

    # -- one case

    def run(self, case: Case) -> tuple[bool, str]:
        fn = self.functions[case.function]
        if fn.name in self.missing:
            return False, f"{fn.name} is declared by the header but not exported by {self.lib._name}"
        spec, setup = self.recipes[fn.name]
        if set(spec) != {p.name for p in fn.params}:
            return False, (f"the recipe's arguments {sorted(spec)} are not the header's "
                           f"{[p.name for p in fn.params]}: update RECIPES")
        token = None
        if setup == "lm":
            self.json_call("ace_lm_reset", b'{"query": "a calm piano piece"}')
            token = self.allowed_token()
        values: dict[str, Any] = {}
        for p in fn.params:
            v = spec[p.name]
            values[p.name] = token if v == "ALLOWED_TOKEN" else v
        valid_scalars = dict(values)
        changes = dict(case.changes)
        for name, change in changes.items():
            if isinstance(change, str) and change in ("ZERO", "SHORT", "LONG", "MAX"):
                valid = valid_scalars[name]
                values[name] = {"ZERO": 0, "SHORT": valid - 1, "LONG": valid + 1, "MAX": SIZE_MAX}[change]
            elif isinstance(change, int | float):
                values[name] = change
        fences: list[Fence] = []
        slots: dict[str, int] = {}
        args = []
        try:
            for p in fn.params:
                change = changes.get(p.name, "KEEP")
                v = values[p.name]
                if change is None:
                    args.append(None)
                    continue
                if p.kind == "ctx":
                    args.append(self.ctx)
                elif p.kind == "owned_ctx":
                    ctx = self.lib.ace_create_context(json.dumps({"onnx_dir": str(self.env.onnx_dir)}).encode())
                    if not ctx:
                        return False, f"set-up: ace_create_context failed: {self.last_error()}"
                    args.append(ctx)
                elif p.kind == "owned_string":
                    args.append(self.lib.ace_version_string())
                elif p.kind == "text":
                    text = change if isinstance(change, bytes) else v
                    fence = Fence(self.libc, len(text) + 1)
                    fences.append(fence)
                    ctypes.memmove(fence.addr, text + b"\0", len(text) + 1)
                    args.append(fence.addr)
                elif p.kind == "slot":
                    shift = 1 if change == "MISALIGNED" else 0
                    fence = Fence(self.libc, 8, shift)
                    fences.append(fence)
                    addr = fence.addr
                    ctypes.c_uint64.from_address(addr).value = 0xDEAD_BEEF_0BAD_F00D
                    slots[p.name] = addr
                    args.append(addr)
                elif p.kind == "buffer":
                    buf: Buf = v
                    count = buf.count if buf.length is None else values[buf.length]
                    if count == SIZE_MAX:  # the claim is a lie; the real buffer keeps its valid size
                        count = valid_scalars[buf.length]
                    size = ctypes.sizeof(buf.ctype)
                    shift = 1 if change == "MISALIGNED" else 0
                    fence = Fence(self.libc, count * size, shift)
                    fences.append(fence)
                    array = (buf.ctype * count).from_address(fence.addr) if count and not shift else None
                    for i in range(count if buf.values and array is not None else 0):
                        array[i] = buf.values[i % len(buf.values)]
                    args.append(fence.addr)
                else:
                    args.append(v)
            if fn.name in FREE_FUNCTIONS:  # an error to clear (ace_free_context) or to keep (ace_string_free)
                self.lib.ace_create_context(None)
            self.calls += 1
            result = getattr(self.lib, fn.name)(*args)
            return self.judge(case, fn, result, slots)
        finally:
            for fence in fences:
                fence.free()

    def error(self, status: int | None, text: str | None) -> tuple[dict | None, str]:
        """The parsed error of a failed call, or why it is not a well-formed one."""
        if text is None:
            return None, f"status {status} but ace_last_error() is NULL"
        try:
            err = json.loads(text)
        except json.JSONDecodeError as e:
            return None, f"the error is not JSON ({e}): {text!r}"
        if not isinstance(err, dict) or set(err) != {"code", "name", "message", "field"}:
            return None, f"the error JSON has keys {sorted(err) if isinstance(err, dict) else err!r}"
        if err["code"] != status or err["name"] != self.statuses.get(status):
            return None, f"status {status} but the error says {err['code']} {err['name']!r}: {text}"
        if not isinstance(err["message"], str) or not err["message"]:
            return None, f"empty message: {text}"
        if status == 7:
            return None, f"a panic was caught inside the library: {text}"
        return err, ""

    def judge(self, case: Case, fn: Function, result: Any, slots: dict[str, int]) -> tuple[bool, str]:
        name = fn.name
        if name in FREE_FUNCTIONS:
            # NULL is ignored, nothing is returned; ace_free_context clears the last error as every entry point
            # does, ace_string_free keeps it (docs/dll_api.md: it and ace_last_error are the two exceptions).
            err = self.last_error()
            if name == "ace_free_context" and err is not None:
                return False, f"ace_free_context left the previous error: {err}"
            if name == "ace_string_free" and err is None:
                return False, "ace_string_free cleared the last error"
            return True, ""
        if name in ("ace_abi_version", "ace_version_string", "ace_last_error"):
            if name == "ace_version_string":
                text = self.take(result)
                return bool(text), f"ace_version_string gave {text!r}"
            if name == "ace_abi_version" and result != 1:
                return False, f"ace_abi_version() = {result}"
            return True, ""
        if name == "ace_create_context":
            if result:
                self.lib.ace_free_context(result)
                err = self.last_error()
                if case.kind != "baseline":
                    return False, "ace_create_context succeeded, it must fail"
                return err is None, f"success left an error behind: {err}"
            text = self.last_error()
            if text is None:
                return False, "ace_create_context returned NULL and left no error"
            err = json.loads(text)
            status = err.get("code") if isinstance(err, dict) else None
            err, why = self.error(status, text)
            return (False, why) if err is None else self.expect(case, fn, status, err)
        status = int(result)
        if status == 0:
            err = self.last_error()
            for slot_name, addr in slots.items():
                ptr = ctypes.c_uint64.from_address(addr).value
                if ptr in (0, 0xDEAD_BEEF_0BAD_F00D):
                    return False, f"success but *{slot_name} is {ptr:#x}"
                text = self.take(ptr)
                try:
                    json.loads(text or "")
                except json.JSONDecodeError as e:
                    return False, f"*{slot_name} is not JSON: {e}"
            if err is not None:
                return False, f"success left an error behind: {err}"
            if case.kind in ("baseline", "scalar") or (case.kind == "length" and case.detail != "max"):
                return True, ""
            return False, "the call succeeded, it must fail"
        err, why = self.error(status, self.last_error())
        if err is None:
            return False, why
        for slot_name, addr in slots.items():
            if case.kind != "misaligned" and ctypes.c_uint64.from_address(addr).value != 0:
                return False, f"error {err} but *{slot_name} was not set to NULL"
        return self.expect(case, fn, status, err)

    def expect(self, case: Case, fn: Function, status: int, err: dict) -> tuple[bool, str]:
        field = err["field"]
        want = {"null": 1, "misaligned": 4, "utf8": 2, "json-syntax": 3, "json-type": 3}.get(case.kind)
        if case.kind == "baseline":
            return False, f"the valid call failed: {err}"
        if want is not None:
            ok = status == want and field == case.param
            return ok, "" if ok else f"want status {want} naming {case.param!r}, got {status}: {err}"
        if case.kind == "length":
            # The length or a buffer it sizes; or another buffer of the call, which the new length makes the
            # inconsistent one (ace_noise: one seed fewer, and `out` no longer has n_seeds * frames * 64).
            names = {n for length, bufs in LENGTHS[fn.name].items() for n in (length, *bufs)}
            ok = status in (1, 4, 5) and field in names
            return ok, "" if ok else f"want an error naming one of {sorted(names)}, got {status}: {err}"
        if case.kind == "scalar":
            ok = field == case.param
            return ok, "" if ok else f"want success or an error naming {case.param!r}, got {status}: {err}"
        return False, f"unexpected case kind {case.kind}"


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", type=Path, required=True)
    parser.add_argument("--onnx-dir", type=Path, required=True)
    parser.add_argument("--tmp", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    ns = parser.parse_args(argv)
    by_id = {c.id: c for c in CASE_LIST}
    ids = json.loads(ns.ids.read_text(encoding="utf-8"))
    child = Child(ns.lib, ns.onnx_dir, ns.tmp)
    with ns.results.open("a", encoding="utf-8") as out:
        for case_id in ids:
            case = by_id[case_id]
            out.write(json.dumps({"id": case_id, "phase": "start"}) + "\n")
            out.flush()
            if case.kind in ("parse", "recipe"):
                ok, why, calls = False, case.detail, 0
            else:
                before = child.calls
                try:
                    ok, why = child.run(case)
                except Exception as e:  # noqa: BLE001 - a harness error is a failing case, reported
                    ok, why = False, f"harness error: {type(e).__name__}: {e}"
                calls = child.calls - before
            out.write(json.dumps({"id": case_id, "phase": "end", "ok": ok, "why": why, "calls": calls}) + "\n")
            out.flush()
    return 0


# ------------------------------------------------------------------------------------------- pytest side


def _gist(stderr: str) -> str:
    """The start of a crash report (the Rust panic / allocation message) and its end (faulthandler's stack)."""
    return stderr if len(stderr) <= 3000 else f"{stderr[:1500]}\n[...]\n{stderr[-1500:]}"


class Results(dict):
    """``{case id: result}``; a short repr, as pytest prints the fixture's value with every failure."""

    def __repr__(self) -> str:
        return f"<{len(self)} ABI table results>"


def run_table(lib: Path, onnx_dir: Path, tmp: Path, ids: list[str]) -> Results:
    """Run the cases in child processes; a crash ends that case (failed, with the signal) and a fresh child
    takes the rest."""
    results = Results()
    remaining = list(ids)
    for attempt in range(len(ids) + 1):
        if not remaining:
            break
        ids_file, results_file = tmp / f"ids-{attempt}.json", tmp / f"results-{attempt}.jsonl"
        ids_file.write_text(json.dumps(remaining), encoding="utf-8")
        cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), "--child", "--lib", str(lib),
               "--onnx-dir", str(onnx_dir), "--tmp", str(tmp), "--ids", str(ids_file), "--results",
               str(results_file)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=tmp)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, stderr = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        started = None
        if results_file.is_file():
            for line in results_file.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row["phase"] == "start":
                    started = row["id"]
                else:
                    results[row["id"]] = row
                    started = None
        if started is not None:
            results[started] = {"id": started, "ok": False, "calls": 1,
                                "why": f"the child process died in this call (exit {rc}): {_gist(stderr)}"}
        elif rc != 0 and not any(i in results for i in remaining):
            for i in remaining:
                results[i] = {"id": i, "ok": False, "calls": 0, "why": f"the child failed (exit {rc}): {_gist(stderr)}"}
        remaining = [i for i in remaining if i not in results]
    return results


@pytest.fixture(scope="module")
def abi_results(tmp_path_factory, parity_session) -> Results:
    from parity_test_helpers import backend_or_skip

    from acestep_parity.backends.dll import BUILD_HINT, find_library

    lib = find_library()
    if lib is None:
        pytest.skip(f"libacestep_runtime.so is not built; {BUILD_HINT}")
    dll = backend_or_skip(parity_session, "dll")
    return run_table(lib, Path(dll.onnx_dir), tmp_path_factory.mktemp("ffi-abi"), CASE_IDS)


def test_header_parses_completely():
    """Every ``ace_*`` prototype of the header parsed, and the table has a row for each."""
    assert not PROBLEMS, PROBLEMS
    names = [f.name for f in FUNCTIONS]
    assert len(names) == len(set(names)) >= 22, names
    assert sorted(set(names) - set(RECIPE_NAMES)) == [], "entry points without a recipe"
    assert sorted(set(RECIPE_NAMES) - set(names)) == [], "recipes of functions the header no longer declares"


def test_header_documents_every_pointer_and_the_recipes_agree():
    """Each pointer argument (but ``ctx``) is named in its function's ``# Safety`` lines, each buffer with the length
    that sizes it (or as a single writable element); the recipes size their buffers by the same lengths."""
    docs = doc_comments(HEADER_TEXT)
    table = recipes(Env(Path("onnx"), Path("tmp"), 8, 64, (0, 8), 16))
    undocumented, disagree = [], []
    for fn in FUNCTIONS:
        safety = docs.get(fn.name, "").split("# Safety", 1)[-1]
        sized = {b: length for length, bufs in LENGTHS.get(fn.name, {}).items() for b in bufs}
        for p in fn.params:
            if p.is_pointer and p.kind != "ctx" and f"`{p.name}`" not in safety:
                undocumented.append(f"{fn.name}({p.name})")
            spec = table.get(fn.name, ({}, None))[0].get(p.name)
            if isinstance(spec, Buf) and spec.length != sized.get(p.name):
                disagree.append(f"{fn.name}: the recipe sizes {p.name} by {spec.length}, the header by "
                                f"{sized.get(p.name)}")
            if p.kind == "buffer" and p.name not in sized and not re.search(
                    rf"`{p.name}`[^;]*\b(is|are) writable", safety):
                undocumented.append(f"{fn.name}({p.name}): no length and not a single writable element")
    assert not undocumented, undocumented
    assert not disagree, disagree
    assert len(LENGTHS) >= 13, LENGTHS  # the parser found the length of every buffer-taking function


def test_header_parser_refuses_what_it_cannot_read():
    functions, problems = parse_header("AceStatus ace_x(const struct AceContext *ctx, struct Foo bar);\n"
                                       "int ace_y(void);\n#define ACE_Z(a) ace_z(a)\n")
    assert not functions and set(problems) == {"ace_x", "ace_y", "ace_z"}, (functions, problems)


@pytest.mark.parametrize("case_id", CASE_IDS, ids=CASE_IDS)
def test_ffi_abi(abi_results, case_id):
    result = abi_results[case_id]
    assert result["ok"], f"{case_id}: {result['why']}"


def test_ffi_abi_table_summary(abi_results, record_property):
    calls = sum(r.get("calls", 0) for r in abi_results.values())
    functions = len({c.function for c in CASE_LIST})
    failed = sorted(i for i, r in abi_results.items() if not r["ok"])
    record_property("ffi_abi_functions", functions)
    record_property("ffi_abi_cases", len(abi_results))
    record_property("ffi_abi_calls", calls)
    print(f"ffi abi table: {functions} functions, {len(abi_results)} cases, {calls} calls, {len(failed)} failed")
    assert len(abi_results) == len(CASE_IDS), "cases without a result"
    callable_cases = [c for c in CASE_LIST if c.kind not in ("parse", "recipe")]
    assert calls >= len(callable_cases) - len(failed), "cases that made no call"


if __name__ == "__main__" and "--child" in sys.argv:
    sys.exit(child_main([a for a in sys.argv[1:] if a != "--child"]))
