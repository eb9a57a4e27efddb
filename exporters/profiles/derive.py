"""Derive a lighter profile folder from an fp32 ONNX folder: (fp32 folder, profile) -> profile folder.

Independent of the model's size and of torch: it reads only the fp32 graphs, their manifest and the cases. Every
transformation is ONNX Runtime's own tool, called with the settings of :mod:`acestep_parity.exporters.profiles.recipes`:

* ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` (keep_io_types, op block list);
* ``int8_dynamic``: ``onnxruntime.quantization.quantize_dynamic``;
* ``int8_static``: ``onnxruntime.quantization.quantize_static`` with a calibration reader over the inputs the
  graph receives when the fp32 folder runs the calibration cases (:mod:`acestep_parity.exporters.profiles.feeds`).

The stale ``value_info`` fix (issue 12): the fp32 graphs, saved by ``onnx_ir``, carry a ``value_info`` entry for
every initializer, repeating the initializer's own shape. Harmless to ONNX Runtime and to ONNX's strict shape
inference on the fp32 graph, but stale as soon as a tool rewrites an initializer under its name: the quantizer
stores a ``Gemm``'s ``transB`` weight transposed ([64, 256] -> [256, 64] for the tiny DiT's
``time_embed.linear_1``), and its own shape inference then meets the old entry (``ShapeInferenceError: Inferred
shape and existing shape differ in dimension 0: (256) vs (64)``). The profile step drops exactly those
redundant entries (the initializer itself states the shape) and keeps every other shape hint; the fp32 graph is
unchanged and its output identical. ORT's ``quant_pre_process`` is no fix here: its symbolic shape inference
fails on the dynamo graphs, and with it skipped it rewrites (optimizes) the graph, which the recipes avoid so that
a profile differs from fp32 only by what the tool does. tests/test_profiles.py::test_value_info_fix shows both
the failure and the fix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from acestep_ort.hashing import sha256_file
from acestep_parity.exporters.profiles.recipes import (
    FP16_NUMERIC_BLOCK_LIST,
    PROFILE_NAMES,
    RECIPES,
    GraphRecipe,
)

PROFILE_SCHEMA = 1
PROFILES_DIR = Path(__file__).resolve().parent


class ProfileError(RuntimeError):
    """A profile that cannot be derived (unknown name, missing fp32 graph, a tool that failed)."""


def profile_fingerprint() -> str:
    """SHA-256 over this package's sources: editing a recipe or the derivation invalidates cached profiles."""
    digest = hashlib.sha256()
    for path in sorted(PROFILES_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("onnx", "onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def profile_key(fp32_manifest: dict, profile: str, recipes: dict[str, GraphRecipe], calibration: dict) -> dict:
    """What must match for a cached profile folder to be reused."""
    return {"profile": profile,
            "source_graphs": {n: r["sha256"] for n, r in sorted(fp32_manifest["graphs"].items())},
            "recipes": {n: r.to_json() for n, r in sorted(recipes.items())},
            "calibration": calibration, "profile_source_sha256": profile_fingerprint(), "versions": _versions()}


# ------------------------------------------------------------------------------------------ one graph


def load_without_value_info(path: Path):
    """The fp32 graph (external data loaded) without the ``value_info`` entries that repeat an initializer's
    shape (module docstring)."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    initializers = {t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name not in initializers]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def _save(model, path: Path, external: bool) -> None:
    import onnx

    path.unlink(missing_ok=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
                  size_threshold=1024)
    else:
        onnx.save(model, str(path))


def fp16_block_list(extra: tuple[str, ...] = FP16_NUMERIC_BLOCK_LIST) -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(extra))


def declare_contrib_outputs_float(model) -> None:
    """Declare the outputs of ORT's contrib ops (``com.microsoft``: the DiT's MultiHeadAttention) as float
    tensors. onnx's shape inference knows no contrib schema, so without this the converter sees an untyped
    output, inserts no Cast back to fp16 after the blocked node, and the fp16 consumer reads fp32."""
    from onnx import TensorProto, helper

    typed = {v.name for v in model.graph.value_info}
    for node in model.graph.node:
        if node.domain == "com.microsoft":
            model.graph.value_info.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                          for name in node.output if name and name not in typed)


def to_fp16(src: Path, dst: Path, external: bool, op_block_list: list[str] | None = None) -> None:
    """``convert_float_to_float16`` with fp32 I/O and the numeric block list (``op_block_list`` replaces it:
    the broken-recipe demonstration passes ORT's default list alone)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_without_value_info(src)
    declare_contrib_outputs_float(model)
    blocked = fp16_block_list() if op_block_list is None else op_block_list
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    _save(converted, dst, external)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, name)


def to_int8_dynamic(src: Path, dst: Path, external: bool, settings: dict) -> None:
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="acestep-quant-") as tmp:
        clean = Path(tmp) / src.name
        _save(load_without_value_info(src), clean, external)
        quantize_dynamic(clean, dst, op_types_to_quantize=list(settings["op_types_to_quantize"]),
                         weight_type=_quant_type(settings["weight_type"]), per_channel=settings["per_channel"],
                         reduce_range=settings["reduce_range"], use_external_data_format=external,
                         extra_options=dict(settings.get("extra_options", {})))


def to_int8_static(src: Path, dst: Path, external: bool, settings: dict, feeds: list[dict]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if not feeds:
        raise ProfileError(f"{src.name}: int8_static needs calibration inputs, none were recorded")
    with tempfile.TemporaryDirectory(prefix="acestep-quant-") as tmp:
        clean = Path(tmp) / src.name
        _save(load_without_value_info(src), clean, external)
        quantize_static(clean, dst, FeedReader(feeds), quant_format=getattr(QuantFormat, settings["quant_format"]),
                        op_types_to_quantize=list(settings["op_types_to_quantize"]),
                        activation_type=_quant_type(settings["activation_type"]),
                        weight_type=_quant_type(settings["weight_type"]), per_channel=settings["per_channel"],
                        reduce_range=settings["reduce_range"], calibrate_method=getattr(CalibrationMethod, settings["calibrate_method"]),
                        use_external_data_format=external, extra_options=dict(settings.get("extra_options", {})))


class FeedReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over recorded feed dicts (duck-typed: the quantizer
    only calls ``get_next``, and ``rewind`` where it calibrates twice)."""

    def __init__(self, feeds: list[dict]):
        self.feeds = list(feeds)
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def derive_graph(src_dir: Path, dst_dir: Path, record: dict, recipe: GraphRecipe, feeds: list[dict] | None) -> dict:
    """Derive one graph into ``dst_dir``; the manifest record (I/O contract kept from the fp32 record)."""
    name = record["name"]
    src = Path(src_dir) / record["file"]
    dst = Path(dst_dir) / record["file"]
    external = bool(record.get("external_data"))
    start = time.perf_counter()
    if recipe.method == "copy":
        for entry in record["files"]:
            shutil.copyfile(Path(src_dir) / entry["file"], Path(dst_dir) / entry["file"])
    elif recipe.method == "fp16":
        to_fp16(src, dst, external)
    elif recipe.method == "int8_dynamic":
        to_int8_dynamic(src, dst, external, recipe.settings)
    elif recipe.method == "int8_static":
        to_int8_static(src, dst, external, recipe.settings, feeds or [])
    else:
        raise ProfileError(f"{name}: unknown method {recipe.method!r}")
    files = [{"file": dst.name, "sha256": sha256_file(dst), "bytes": dst.stat().st_size}]
    data = dst.with_name(dst.name + ".data")
    if data.is_file():
        files.append({"file": data.name, "sha256": sha256_file(data), "bytes": data.stat().st_size})
    contract = {k: record[k] for k in ("name", "file", "inputs", "outputs", "opset", "reference") if k in record}
    return {
        **contract,
        "sha256": files[0]["sha256"],
        "files": files,
        "external_data": len(files) > 1,
        "bytes": sum(f["bytes"] for f in files),
        "source": {"file": record["file"], "sha256": record["sha256"],
                   "bytes": sum(f["bytes"] for f in record["files"])},
        "offered": recipe.method != "copy",
        **recipe.to_json(),
        "derive_seconds": round(time.perf_counter() - start, 2),
    }


# ------------------------------------------------------------------------------------------ one folder


def derive_profile(fp32_dir: Path, out_dir: Path, profile: str, *, cases_dir: Path | None = None,
                   calibration_cases: tuple[str, ...] | None = None, evaluation_cases: tuple[str, ...] | None = None,
                   golden_dir: Path | None = None, evaluate: bool = True,
                   log: Callable[[str], None] | None = None) -> dict:
    """Write ``profile`` of the fp32 folder into ``out_dir`` (graphs, assets, manifest); return the manifest.

    int8_static records its calibration inputs by running the fp32 folder on ``calibration_cases``; with
    ``evaluate`` the manifest gets each graph's accuracy against fp32 (and the end-to-end audio against fp32
    and, where a golden exists, against torch) and its speed, measured on ``evaluation_cases``.
    """
    from acestep_ort.host.assets import asset_records
    from acestep_parity import paths
    from acestep_parity.exporters.profiles import feeds as feeds_mod

    if profile not in RECIPES:
        raise ProfileError(f"unknown profile {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    fp32_manifest = json.loads((fp32_dir / "manifest.json").read_text(encoding="utf-8"))
    cases_dir = Path(cases_dir) if cases_dir else paths.CASES_DIR
    recipes = {n: r for n, r in RECIPES[profile].items() if n in fp32_manifest["graphs"]}
    calib_ids = calibration_cases or feeds_mod.CALIBRATION_CASES
    calibration = feeds_mod.describe_cases(cases_dir, calib_ids) if any(
        r.method == "int8_static" for r in recipes.values()) else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded: dict[str, list[dict]] = {}
    if calibration:
        if log:
            log(f"{profile}: recording calibration inputs on {', '.join(calib_ids)} ...")
        wanted = tuple(n for n, r in recipes.items() if r.method == "int8_static")
        recorded = feeds_mod.record_feeds(fp32_dir, cases_dir, calib_ids, wanted).feeds
    records = {}
    for name, recipe in recipes.items():
        if log:
            log(f"{profile}: {name} ({recipe.method}) ...")
        records[name] = derive_graph(fp32_dir, out_dir, fp32_manifest["graphs"][name], recipe, recorded.get(name))
    copy_assets(fp32_dir, out_dir)
    manifest = {
        "schema": fp32_manifest.get("schema"),
        "profile_schema": PROFILE_SCHEMA,
        "profile": profile,
        "checkpoint_id": fp32_manifest.get("checkpoint_id"),
        "key": profile_key(fp32_manifest, profile, recipes, calibration),
        "source_manifest_sha256": sha256_file(fp32_dir / "manifest.json"),
        "config_dims": fp32_manifest.get("config_dims"),
        "ort_session": fp32_manifest.get("ort_session"),
        "graphs": records,
        "assets": asset_records(out_dir),
    }
    if evaluate:
        from acestep_parity.exporters.profiles.evaluate import evaluate_profile

        eval_ids = evaluation_cases or feeds_mod.EVALUATION_CASES
        if log:
            log(f"{profile}: measuring accuracy and speed against fp32 on {', '.join(eval_ids)} ...")
        evaluate_profile(fp32_dir, out_dir, manifest, cases_dir, eval_ids, golden_dir)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def profile_matches(out_dir: Path, fp32_dir: Path, profile: str, cases_dir: Path | None = None) -> bool:
    """Whether ``out_dir`` holds a complete profile derived from this fp32 folder with these recipes."""
    from acestep_parity import paths
    from acestep_parity.exporters.profiles import feeds as feeds_mod

    path = Path(out_dir) / "manifest.json"
    if not path.is_file() or profile not in RECIPES:
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        fp32_manifest = json.loads((Path(fp32_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    recipes = {n: r for n, r in RECIPES[profile].items() if n in fp32_manifest["graphs"]}
    calibration = feeds_mod.describe_cases(Path(cases_dir) if cases_dir else paths.CASES_DIR,
                                           feeds_mod.CALIBRATION_CASES) if any(
        r.method == "int8_static" for r in recipes.values()) else {}
    if manifest.get("key") != profile_key(fp32_manifest, profile, recipes, calibration):
        return False
    for record in manifest["graphs"].values():
        for entry in record["files"]:
            file = Path(out_dir) / entry["file"]
            if not file.is_file() or file.stat().st_size != entry["bytes"]:
                return False
    return True


def ensure_profile(fp32_dir: Path, profile: str, log: Callable[[str], None] | None = None) -> Path:
    """The profile folder beside the fp32 folder (``artifacts/<checkpoint-id>/<profile>``), derived once.

    Same discipline as :func:`acestep_parity.exporters.export.ensure_artifacts`: a file lock for pytest-xdist workers, a
    temporary sibling renamed into place, reuse when the key matches.
    """
    from acestep_parity import paths
    from acestep_parity.exporters.profiles import feeds as feeds_mod

    fp32_dir = Path(fp32_dir)
    target = fp32_dir.parent / profile

    def build(tmp: Path) -> None:
        # one text2music case and one simple-mode case (the planner graphs) keep the test suite's cost down;
        # `acestep-export --profile` measures all of EVALUATION_CASES
        derive_profile(fp32_dir, tmp, profile, golden_dir=_golden_dir(fp32_dir), log=log,
                       evaluation_cases=feeds_mod.EVALUATION_CASES[::2])

    return paths.build_atomically(target, fp32_dir.parent / f".{profile}.lock",
                                  lambda: profile_matches(target, fp32_dir, profile), build)


def copy_assets(fp32_dir: Path, out_dir: Path) -> None:
    """The fp32 folder's host assets (tokenizers, silence latent), byte for byte: a profile folder is as
    self-contained as the fp32 one."""
    from acestep_ort.host.assets import asset_records

    for name in asset_records(fp32_dir):
        (Path(out_dir) / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(fp32_dir) / name, Path(out_dir) / name)


def _golden_dir(fp32_dir: Path) -> Path | None:
    """The repository's golden folder of this checkpoint, where one exists (torch reference of the manifest)."""
    from acestep_parity import paths

    manifest = json.loads((Path(fp32_dir) / "manifest.json").read_text(encoding="utf-8"))
    candidate = paths.GOLDEN_DIR / str(manifest.get("checkpoint_id"))
    return candidate if (candidate / "manifest.json").is_file() else None
