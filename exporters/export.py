"""Export every text2music graph from a checkpoint folder, write the manifest, and cache the artifacts.

:func:`export_all` is the one export code path: the ``acestep-export`` CLI, the pytest ``onnx_artifacts``
fixture (through :func:`ensure_artifacts`) and the ONNX Runtime backend all call it, so the graphs under test
are the graphs users get. Each graph is traced by ``torch.onnx.export(dynamo=True)`` from the wrapper module
of its ``exporters.<graph>`` module, with ``dynamic_shapes`` built from its :class:`~acestep_parity.exporters.specs.GraphSpec`;
the exported I/O is then checked against the spec (a disagreement fails the export, not a later test).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from acestep_ort.hashing import sha256_file
from acestep_parity import paths
from acestep_parity.exporters.inputs import make_inputs
from acestep_parity.exporters.specs import (
    AXES,
    EXPORTER,
    GRAPH_SPECS,
    LM_GRAPHS,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    ORT,
    ExporterSettings,
    GraphSpec,
    config_dims,
    is_dynamic,
)

EXPORTERS_DIR = Path(__file__).resolve().parent
_VERSIONED = ("torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "transformers", "diffusers", "numpy")
# Warnings of a correct export: one shared Dim used by several inputs (intended, equal names = equal sizes),
# and a pytree deprecation inside torch.export itself.
_EXPORT_NOISE = (r".*will not be used, since it shares the same shape constraints with another axis.*",
                 r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


class ExportError(RuntimeError):
    """An export that failed or produced a graph that disagrees with its spec."""


def graph_module(spec: GraphSpec) -> ModuleType:
    """``acestep_parity.exporters.<spec.module>``: provides ``build(models)`` and ``reference(models, inputs)``."""
    return importlib.import_module(f"acestep_parity.exporters.{spec.module}")


def source_fingerprint() -> str:
    """SHA-256 over the exporter sources: editing a wrapper invalidates cached artifacts."""
    digest = hashlib.sha256()
    for path in sorted(EXPORTERS_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of every library that decides the bytes or the numerics of a graph.

    Read from the installed distributions' metadata, so checking a cached manifest imports no torch.
    """
    from importlib import metadata

    out = {}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def with_lm_hashes(checkpoint_dir: Path, checkpoint_hashes: dict[str, str]) -> dict[str, str]:
    """The checkpoint hashes plus the planner's files when the checkpoint has the LM folder (the LM graphs'
    cache key: ``file_hashes`` alone covers only what text2music needs and names the golden folder)."""
    from acestep_parity.checkpoint import has_lm, lm_file_hashes

    if not has_lm(checkpoint_dir):
        return dict(checkpoint_hashes)
    return {**checkpoint_hashes, **lm_file_hashes(checkpoint_dir)}


def available_graphs(checkpoint_hashes: dict[str, str]) -> list[str]:
    """Every graph, minus the LM graphs when the (extended) hashes show no planner folder."""
    from acestep_ort.host.lm_tokenizer import LM_DIR

    lm = any(k.startswith(f"{LM_DIR}/") for k in checkpoint_hashes)
    return [n for n in GRAPH_SPECS if lm or n not in LM_GRAPHS]


def cache_key(checkpoint_hashes: dict[str, str], settings: ExporterSettings = EXPORTER) -> dict:
    """What must match for cached artifacts to be reused: checkpoint, exporter settings, sources, versions."""
    return {"checkpoint_hashes": dict(sorted(checkpoint_hashes.items())), "exporter": settings.to_json(),
            "exporter_source_sha256": source_fingerprint(), "versions": library_versions()}


# ------------------------------------------------------------------------------------------------ tracing


@dataclass
class Traced:
    """One traced graph before it is written: the ONNXProgram, its example inputs and timings."""

    spec: GraphSpec
    program: object  # torch.onnx.ONNXProgram
    args: tuple
    dims: dict[str, int]
    seconds: float


def dynamic_shapes_for(spec: GraphSpec, static_axes: Collection[str] = ()) -> dict[str, dict]:
    """``torch.export`` dynamic_shapes: one shared ``Dim`` per axis name, so equal names are equal sizes."""
    from torch.export import Dim

    dims = {name: Dim(name, min=spec.axis_range(name)[0], max=spec.axis_range(name)[1])
            for name in AXES if name not in static_axes}
    return {t.name: {i: dims[e] for i, e in enumerate(t.shape) if isinstance(e, str) and e in dims}
            for t in spec.inputs}


def trace_graph(spec: GraphSpec, models, settings: ExporterSettings = EXPORTER,
                static_axes: Collection[str] = ()) -> Traced:
    """Trace ``spec``'s wrapper with the dynamo exporter (eval mode, no grad) and post-process the IR.

    ``static_axes`` deliberately leaves axes out of ``dynamic_shapes`` (they get specialised to the dummy
    size); only the mis-declared-axis demonstration uses it.
    """
    import logging

    import torch

    # "torchvision is not installed. Skipping torchvision::nms" (x4 per export): the project needs no torchvision
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    dims = config_dims(models.dit_config, models.text_config, getattr(models, "lm_config", None))
    module = graph_module(spec)
    wrapper = module.build(models).eval()
    inputs = make_inputs(spec, spec.export_sizes, dims, seed=settings.dummy_seed,
                         silence_latent=models.silence_latent)
    args = tuple(torch.from_numpy(inputs[name]) for name in spec.input_names)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        for message in _EXPORT_NOISE:
            warnings.filterwarnings("ignore", message=message)
        program = torch.onnx.export(
            wrapper, args, dynamo=True, dynamic_shapes=dynamic_shapes_for(spec, static_axes),
            input_names=spec.input_names, output_names=spec.output_names, opset_version=settings.opset,
            optimize=settings.optimize, verbose=False, report=False, verify=False,
            custom_translation_table=getattr(module, "TRANSLATIONS", None),
        )
    _postprocess(program.model, spec, dims, settings, static_axes)
    return Traced(spec, program, args, dims, time.perf_counter() - start)


def _postprocess(model, spec: GraphSpec, dims: dict[str, int], settings: ExporterSettings,
                 static_axes: Collection[str]) -> None:
    """Strip location-dependent metadata, name output axes after the contract, check the I/O against it."""
    import onnx_ir as ir

    for key in settings.stripped_graph_metadata:
        model.graph.metadata_props.pop(key, None)
    for node in model.graph.all_nodes():
        for key in settings.stripped_node_metadata:
            node.metadata_props.pop(key, None)
    # torch.export names derived output axes after its own symbols (``1920*s35``, unbacked ``u1`` ...); the
    # contract names them. Only a rename: an axis the exporter made static where the contract says dynamic (or
    # the reverse) is an error; the shape-grid tests prove the named expressions hold for real shapes.
    problems = []
    if not static_axes:
        for value, tensor in zip(model.graph.outputs, spec.outputs, strict=True):
            want = tensor.resolved_shape(dims)
            got = list(value.shape) if value.shape is not None else [None] * len(want)
            if len(got) != len(want):
                problems.append(f"{tensor.name}: rank {len(got)} != contract {len(want)}")
                continue
            for axis, (w, g) in enumerate(zip(want, got, strict=True)):
                if is_dynamic(w) and isinstance(g, int):
                    problems.append(f"{tensor.name}: axis {axis} ({w}) was specialised to {g} by the exporter")
                elif not is_dynamic(w) and not isinstance(g, int):
                    problems.append(f"{tensor.name}: axis {axis} is symbolic ({g}), the contract fixes it to {w}")
            value.shape = ir.Shape([ir.SymbolicDim(e) if is_dynamic(e) else int(e) for e in want])
    problems += compare_io(spec, dims, graph_io_from_ir(model), static_axes=static_axes)
    if problems:
        raise ExportError(f"{spec.name}: exported graph disagrees with its spec: " + "; ".join(problems))


def graph_io_from_ir(model) -> dict:
    """The I/O of an onnx_ir model as ``{"inputs"/"outputs": [{name, dtype, shape}]}``."""

    def one(value) -> dict:
        dtype = np.dtype(value.dtype.numpy()).name if value.dtype is not None else None
        shape = [d if isinstance(d, int) else d.value for d in value.shape] if value.shape is not None else None
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return {"inputs": [one(v) for v in model.graph.inputs], "outputs": [one(v) for v in model.graph.outputs]}


def graph_io_from_proto(model) -> dict:
    """The I/O of an ``onnx.ModelProto`` in the same form (what the tests read from the saved file)."""
    import onnx

    def one(value) -> dict:
        ttype = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
        shape = [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
                 for d in ttype.shape.dim]
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return {"inputs": [one(v) for v in model.graph.input], "outputs": [one(v) for v in model.graph.output]}


def compare_io(spec: GraphSpec, dims: dict[str, int], io: dict, static_axes: Collection[str] = ()) -> list[str]:
    """Differences between a graph's I/O and its spec (names, order, dtypes, symbolic/static dims)."""
    problems: list[str] = []
    expected = spec.io_json(dims)
    for side in ("inputs", "outputs"):
        want, got = expected[side], io[side]
        if [t["name"] for t in want] != [t["name"] for t in got]:
            problems.append(f"{side} {[t['name'] for t in got]} != spec {[t['name'] for t in want]}")
            continue
        for w, g in zip(want, got, strict=True):
            if w["dtype"] != g["dtype"]:
                problems.append(f"{w['name']}: dtype {g['dtype']} != spec {w['dtype']}")
            wshape = [spec.export_sizes[e] if e in static_axes else e for e in w["shape"]]
            if side == "outputs" and static_axes:
                continue  # a deliberately broken export keeps torch's own output axes
            if wshape != g["shape"]:
                problems.append(f"{w['name']}: shape {g['shape']} != spec {wshape}")
    return problems


# ------------------------------------------------------------------------------------------------- saving


def initializer_bytes(model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_graph(traced: Traced, out_dir: Path, settings: ExporterSettings = EXPORTER) -> dict:
    """Write one graph (external data above the threshold) and return its manifest record."""
    import onnx_ir as ir

    spec = traced.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / spec.filename
    data_name = f"{spec.filename}.data"
    for stale in (path, out_dir / data_name):
        stale.unlink(missing_ok=True)
    model = traced.program.model
    weights = initializer_bytes(model)
    external = weights > settings.external_data_threshold_bytes
    start = time.perf_counter()
    if external:
        ir.save(model, path, external_data=data_name, size_threshold_bytes=settings.external_tensor_min_bytes)
    else:
        ir.save(model, path)
    save_seconds = time.perf_counter() - start
    files = [{"file": spec.filename, "sha256": sha256_file(path), "bytes": path.stat().st_size}]
    if external:
        data = out_dir / data_name
        files.append({"file": data_name, "sha256": sha256_file(data), "bytes": data.stat().st_size})
    opsets = {domain or "ai.onnx": version for domain, version in model.opset_imports.items()}
    return {
        "name": spec.name,
        "file": spec.filename,
        "sha256": files[0]["sha256"],
        "files": files,
        "external_data": external,
        "initializer_bytes": weights,
        "opset": opsets.get("ai.onnx"),
        "opset_imports": opsets,
        "ir_version": model.ir_version,
        **spec.io_json(traced.dims),
        "exporter_path": "dynamo",
        "workarounds": list(spec.workarounds),
        "reference": spec.reference,
        "export_seconds": round(traced.seconds, 2),
        "save_seconds": round(save_seconds, 2),
    }


def export_graph(spec: GraphSpec, models, out_dir: Path, settings: ExporterSettings = EXPORTER) -> dict:
    """Trace and write one graph; its manifest record."""
    try:
        traced = trace_graph(spec, models, settings)
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; name the graph
        raise ExportError(f"{spec.name}: torch.onnx.export(dynamo=True) failed: {exc}") from exc
    return save_graph(traced, Path(out_dir), settings)


# ------------------------------------------------------------------------------------------------ manifest


def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def write_manifest(out_dir: Path, manifest: dict) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def export_all(checkpoint_dir: Path, out_dir: Path, graphs: Iterable[str] | None = None, *,
               settings: ExporterSettings = EXPORTER, models=None, checkpoint_hashes: dict[str, str] | None = None,
               jobs: int = 1, log: Callable[[str], None] | None = None, per_graph: bool | None = None,
               validate: bool = False, defer_check: bool = False) -> dict:
    """Export ``graphs`` (default: all) of the checkpoint into ``out_dir``; write and return the manifest.

    ``jobs > 1`` traces the graphs in that many spawned processes (each loads the checkpoint itself, so only
    for small checkpoints: tracing is single-threaded Python work, and the tiny graphs export about twice as
    fast on two cores). ``per_graph`` (default: for checkpoints of 1 GiB and more) exports each graph in a
    child process of its own, one after another, that reads only the modules its graph needs: the peak memory
    of a full-size export is then one graph's weights and its trace, and each record states its process's
    ``peak_rss_bytes``. ``validate`` runs each written graph on :data:`validate.SMOKE_GRID` against its module
    (the module's outputs are computed first and the module freed before ONNX Runtime loads the graph) and
    records the figures (``defer_check``: a worker's, whose parent runs the written graph). The bytes do not depend on
    ``jobs`` or ``per_graph``. Records of graphs not
    re-exported are kept from an existing manifest in ``out_dir`` when it was written for the same checkpoint,
    settings, sources and library versions (so ``--graphs`` can refresh a subset).
    """
    from acestep_ort.host.assets import asset_records, copy_runtime_assets
    from acestep_parity.checkpoint import (
        DIT_DIR,
        LM_DIR,
        TEXT_DIR,
        VAE_DIR,
        checkpoint_id,
        file_hashes,
        has_lm,
        read_json,
    )

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    base_hashes = checkpoint_hashes if checkpoint_hashes is not None else file_hashes(checkpoint_dir)
    base_hashes = {k: v for k, v in base_hashes.items() if not k.startswith(f"{LM_DIR}/") and k != "genres_vocab.txt"}
    hashes = with_lm_hashes(checkpoint_dir, base_hashes)
    names = list(graphs) if graphs is not None else available_graphs(hashes)
    unknown = [n for n in names if n not in GRAPH_SPECS]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; choose from {list(GRAPH_SPECS)}")
    key = cache_key(hashes, settings)
    lm_cfg = read_json(checkpoint_dir / LM_DIR / "config.json") if has_lm(checkpoint_dir) else None
    dims = config_dims(read_json(checkpoint_dir / DIT_DIR / "config.json"),
                       read_json(checkpoint_dir / TEXT_DIR / "config.json"), lm_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out_dir)
    records = dict(previous["graphs"]) if previous and previous.get("key") == key else {}
    total = time.perf_counter()
    children = models is None and _cli_expressible(settings)
    if per_graph is None:
        per_graph = children and jobs == 1 and len(names) > 1 and checkpoint_bytes(checkpoint_dir) >= SMALL_CHECKPOINT_BYTES
    if per_graph and children:
        for i, name in enumerate(names):  # one after another: two full-size graphs at once would not fit 24 GB
            if log:
                log(f"[{i + 1}/{len(names)}] {name}: a child process reads its modules, traces, writes"
                    f"{', checks' if validate else ''}")
            records[name] = _export_in_subprocesses(checkpoint_dir, out_dir, [[name]], settings, validate=validate,
                                                    stream=log is not None)[name]
            for line in _describe_checks(records[name]) if log else ():
                log(line)
            if log and records[name].get("validation"):
                log(f"    checked in this process: RSS {records[name]['validation'][-1]['check_rss_bytes'] / 1e9:.2f} GB "
                    "with the graph loaded (weights memory-mapped, not prepacked)")
    elif children and len(groups := balance(names, jobs)) > 1:
        if log:
            log(f"exporting {' | '.join(','.join(g) for g in groups)} in {len(groups)} processes ...")
        for record in _export_in_subprocesses(checkpoint_dir, out_dir, groups, settings, validate=validate).values():
            records[record["name"]] = record
            if log:
                log(_describe(record))
    else:
        records.update(_export_group(checkpoint_dir, out_dir, names, settings, models, log, validate=validate,
                                     defer_check=defer_check))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "checkpoint_id": checkpoint_id(checkpoint_dir, base_hashes),
        "key": key,
        "exporter_settings": settings.to_json(),
        "ort_session": ORT.to_json(),
        "versions": key["versions"],
        "config_dims": dims,
        # the VAE decoder's widths: the runtimes size their decode chunks from them (host/tiling.py: VaeShape)
        "vae_shape": {k: read_json(checkpoint_dir / VAE_DIR / "config.json")[k]
                      for k in ("decoder_channels", "channel_multiples", "downsampling_ratios")},
        "reproducible": ("exporting twice gives byte-identical graphs (SHA-256) for the same checkpoint, "
                         "settings, sources and versions; tests/test_export.py::test_export_reproducible checks it"),
        "graphs": {n: records[n] for n in GRAPH_SPECS if n in records},
        "export_seconds_total": round(time.perf_counter() - total, 2),
    }
    # tokenizer + silence latent (.pt and a language-neutral .npy): the folder is self-contained
    copy_runtime_assets(checkpoint_dir, out_dir)
    manifest["assets"] = asset_records(out_dir)
    write_manifest(out_dir, manifest)
    return manifest


def balance(names: list[str], jobs: int) -> list[list[str]]:
    """Split graphs into at most ``jobs`` groups of about equal tracing cost (greedy, pipeline order kept)."""
    jobs = max(1, min(jobs, len(names)))
    groups: list[list[str]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for name in sorted(names, key=lambda n: -GRAPH_SPECS[n].trace_cost):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += GRAPH_SPECS[name].trace_cost
    order = {n: i for i, n in enumerate(GRAPH_SPECS)}
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def _cli_expressible(settings: ExporterSettings) -> bool:
    """Whether ``acestep-export`` options can reproduce ``settings`` in a child process."""
    from dataclasses import replace

    return replace(EXPORTER, external_data_threshold_bytes=settings.external_data_threshold_bytes) == settings


def _export_in_subprocesses(checkpoint_dir: Path, out_dir: Path, groups: list[list[str]],
                            settings: ExporterSettings, validate: bool = False,
                            stream: bool = False) -> dict[str, dict]:
    """Run one ``python -m acestep_parity.exporters.cli`` per group concurrently, then move the files into ``out_dir``.

    Child *processes* rather than ``multiprocessing``: a spawned worker re-imports the caller's ``__main__``,
    which deadlocks (or recurses) when a script without a main guard calls :func:`ensure_artifacts`.
    ``stream`` passes the children's progress lines (stderr) through instead of collecting them.
    """
    import subprocess
    import sys

    work = Path(tempfile.mkdtemp(prefix=".jobs-", dir=out_dir))
    try:
        procs = []
        for i, group in enumerate(groups):
            cmd = [sys.executable, "-m", "acestep_parity.exporters.cli", "--checkpoint-dir", str(checkpoint_dir), "--out",
                   str(work / str(i)), "--graphs", ",".join(group), "--no-per-graph", "--child",
                   "--external-data-threshold", str(settings.external_data_threshold_bytes)]
            cmd += ["--validate"] if validate else []
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if stream else subprocess.PIPE,
                                          text=True))
        errors = []
        for proc, group in zip(procs, groups, strict=True):
            _, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{','.join(group)}: exit {proc.returncode}" + (f"\n{err[-3000:]}" if err else ""))
        if errors:
            raise ExportError("export in a child process failed:\n" + "\n".join(errors))
        records = {}
        for i, group in enumerate(groups):
            manifest = read_manifest(work / str(i))
            for name in group:
                record = manifest["graphs"][name]
                for entry in record["files"]:
                    (work / str(i) / entry["file"]).replace(out_dir / entry["file"])
                if "smoke_points" in record:
                    from acestep_parity.exporters.validate import load_smoke_points

                    points = load_smoke_points(work / str(i) / record.pop("smoke_points"))
                    record["validation"] = _validate_written(out_dir, GRAPH_SPECS[name], points,
                                                             manifest["config_dims"])
                records[name] = record
        return records
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _describe(record: dict) -> str:
    line = (f"  {record['file']}: {sum(f['bytes'] for f in record['files']) / 1e6:.1f} MB, "
            f"{record['export_seconds']:.1f} s trace + {record['save_seconds']:.1f} s save, "
            f"sha256 {record['sha256'][:16]}")
    if "peak_rss_bytes" in record:
        line += (f", peak RSS {record['peak_rss_bytes'] / 1e9:.2f} GB "
                 f"({record['peak_rss_bytes'] / max(record['initializer_bytes'], 1):.2f}x its weights)")
    return "\n".join([line, *_describe_checks(record)])


def _describe_checks(record: dict) -> list[str]:
    lines = []
    for row in record.get("validation", ()):
        flag = "" if row.get("within_gate", True) else f"  OVER the onnx~torch gate {row['gate_max_abs']:.1e}"
        lines.append(f"    check {row['output']} at {row['sizes']}: max_abs {row['max_abs']:.2e} "
                     f"rmse {row['rmse']:.2e}{flag}")
    return lines


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports kilobytes, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_now_bytes() -> int:
    """This process's resident set now (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _export_group(checkpoint_dir: Path, out_dir: Path, names: list[str], settings: ExporterSettings,
                  models=None, log: Callable[[str], None] | None = None, validate: bool = False,
                  defer_check: bool = False) -> dict[str, dict]:
    """Export ``names`` in this process (also the body of a spawned worker); their manifest records.

    Reads only the modules the graphs need. With ``validate`` the module's smoke-grid outputs are computed before
    the trace and the written graph is run by ONNX Runtime on the same inputs: here, or with ``defer_check`` (a
    worker) by the parent, from the points saved beside the graph. The worker cannot do it within the export's
    memory: onnxscript's rewrite rules are module-level objects that keep the last graph they matched, and
    through it the module's parameters (a full-size DiT stayed in memory while ONNX Runtime loaded the written
    graph: 13.7 GB peak for 6.3 GB of weights, measured)."""
    from acestep_parity.checkpoint import load_reference_models

    owned = models is None
    if owned:
        models = load_reference_models(checkpoint_dir, modules={m for n in names for m in GRAPH_SPECS[n].modules})
    records = {}
    for i, name in enumerate(names):
        spec = GRAPH_SPECS[name]
        if log:
            log(f"exporting {name} ...")
        points = None
        if validate:
            from acestep_parity.exporters.validate import smoke_references

            dims = config_dims(models.dit_config, models.text_config, getattr(models, "lm_config", None))
            points = smoke_references(spec, models, dims)
        records[name] = export_graph(spec, models, out_dir, settings)
        if owned:
            _release(models, names, done=names[: i + 1])
        records[name]["peak_rss_bytes"] = peak_rss_bytes()
        if points is not None and defer_check:
            from acestep_parity.exporters.validate import save_smoke_points

            records[name]["smoke_points"] = save_smoke_points(out_dir / f".{spec.name}.smoke.npz", points).name
        elif points is not None:
            records[name]["validation"] = _validate_written(out_dir, spec, points, dims)
        if log:
            log(_describe(records[name]))
    return records


def _validate_written(out_dir: Path, spec: GraphSpec, points, dims: dict[str, int]) -> list[dict]:
    """The smoke grid on the written graph, gated by ``onnx~torch`` max_abs where the tolerance file has one;
    a contract problem or a non-finite output fails the export."""
    import gc

    from acestep_parity.exporters.validate import smoke_check

    gc.collect()
    gates = {}
    try:
        from acestep_parity.tolerances import Tolerances

        tolerances = Tolerances.load(paths.TOLERANCE_FILE)
        for name in spec.output_names:
            if tolerances.has("onnx~torch", "fp32", name):
                gates[name] = {m: g.value for m, g in tolerances.gates("onnx~torch", "fp32", name).items()}
    except (OSError, ValueError):
        gates = {}
    rows, problems = smoke_check(out_dir / spec.filename, spec, points, dims, gates)
    for row in rows:
        row["check_rss_bytes"] = rss_now_bytes()  # the checking process, its session alive (weights mapped)
    if problems:
        raise ExportError(f"{spec.name}: the written graph fails its smoke grid: " + "; ".join(problems))
    return rows


_MODULE_FIELDS = ("text_encoder", "condition_encoder", "audio_tokenizer", "audio_detokenizer", "transformer", "vae",
                  "lm")


def _release(models, names: list[str], done: Iterable[str]) -> None:
    """Drop the modules no remaining graph reads (export_all's own models only), so that a full-size export
    holds one model's weights plus its trace (<= 12 GB measured) instead of all 12.5 GB of modules."""
    import gc

    needed = {m for n in names if n not in set(done) for m in GRAPH_SPECS[n].modules}
    released = False
    for field_name in _MODULE_FIELDS:
        if field_name not in needed and getattr(models, field_name) is not None:
            setattr(models, field_name, None)
            released = True
    if released:
        gc.collect()


def manifest_matches(out_dir: Path, checkpoint_hashes: dict[str, str], graphs: Iterable[str] | None = None,
                     settings: ExporterSettings = EXPORTER, verify_hashes: bool = False) -> bool:
    """Whether ``out_dir`` holds a complete export for this checkpoint and exporter (files present, sizes equal;
    with ``verify_hashes`` also the SHA-256 of every file)."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("schema") != MANIFEST_SCHEMA:
        return False
    if manifest.get("key") != cache_key(checkpoint_hashes, settings):
        return False
    for name in graphs if graphs is not None else available_graphs(checkpoint_hashes):
        record = manifest["graphs"].get(name)
        if record is None:
            return False
        for entry in record["files"]:
            path = Path(out_dir) / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                return False
            if verify_hashes and sha256_file(path) != entry["sha256"]:
                return False
    return True


SMALL_CHECKPOINT_BYTES = 1 << 30


def checkpoint_bytes(checkpoint_dir: Path) -> int:
    """Bytes of the checkpoint's required files (what an export or a reference run reads)."""
    from acestep_parity.checkpoint import REQUIRED_FILES

    return sum((Path(checkpoint_dir) / rel).stat().st_size for rel in REQUIRED_FILES)


def default_jobs(checkpoint_dir: Path) -> int:
    """2 export processes for a small checkpoint on a multi-core machine, else 1 (each process loads the
    whole checkpoint, so a full-size one must not be loaded twice)."""
    import os

    return 2 if checkpoint_bytes(checkpoint_dir) < SMALL_CHECKPOINT_BYTES and (os.cpu_count() or 1) >= 2 else 1


def artifacts_dir(checkpoint_id: str, profile: str = "fp32") -> Path:
    return paths.cache_dir() / "artifacts" / checkpoint_id / profile


def ensure_artifacts(checkpoint_dir: Path, checkpoint_id: str, checkpoint_hashes: dict[str, str], *,
                     log: Callable[[str], None] | None = None, validate: bool = False) -> Path:
    """The fp32 graphs of a checkpoint under ``cache_dir()/artifacts/<id>/fp32``, exported once.

    Safe under pytest-xdist and concurrent backends: the export runs under a file lock into a temporary sibling
    folder that replaces the target atomically; a manifest that matches (checkpoint hashes, exporter settings,
    exporter sources, library versions, files present) is reused without loading torch models. The folder is
    the one pytest, ``make realsize`` and both runtimes' default ``--onnx-dir`` use, so ``acestep-export``
    without ``--out`` writes here (``log`` and ``validate`` as in :func:`export_all`).
    """
    target = artifacts_dir(checkpoint_id)
    extended = with_lm_hashes(checkpoint_dir, checkpoint_hashes)

    def build(tmp: Path) -> None:
        manifest = export_all(checkpoint_dir, tmp, checkpoint_hashes=checkpoint_hashes,
                              jobs=default_jobs(checkpoint_dir), log=log, validate=validate)
        if manifest["checkpoint_id"] != checkpoint_id:
            raise ExportError(f"{checkpoint_dir} is {manifest['checkpoint_id']}, not {checkpoint_id}")

    return paths.build_atomically(target, target.parent / ".fp32.lock", lambda: manifest_matches(target, extended),
                                  build)
