"""Per-graph validation of the ONNX export: contract, shape-grid parity against the PyTorch modules, manifest,
reproducibility, external data, weight-norm folding, the packing rewrite and a mis-declared axis.

Every graph is exported once per checkpoint by the ``onnx_artifacts`` fixture (tests/conftest.py) and then run
by ONNX Runtime with the pinned session options of ``acestep_parity.exporters.specs.ORT`` on a grid of shapes that differs
from the export (dummy) shapes. Names, dtypes and shapes are asserted before any value; values are gated by
``cases/tolerances.json`` (pair ``onnx~torch``, profile ``fp32``); a failing gate appends the first-divergence
diagnostic (``acestep_parity.exporters.diagnose``) to the report. Test ids read like ``dit_decoder-B2-T155-Tenc40``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from acestep_ort.host.schedule import SHIFT_TIMESTEPS
from acestep_parity import parity
from acestep_parity.exporters.contract import format_shape, parse_io_table
from acestep_parity.exporters.inputs import make_inputs
from acestep_parity.exporters.specs import (
    EXPORTER,
    GRAPH_SPECS,
    OPSET,
    ORT,
    GraphSpec,
    config_dims,
)

torch = pytest.importorskip("torch", reason="the export tests need the reference extras: pip install -e '.[reference]'")
onnx = pytest.importorskip("onnx")

PAIR = "onnx~torch"
PROFILE = "fp32"
DOCS = Path(__file__).resolve().parent.parent / "docs"


# ------------------------------------------------------------------------------------------------ the grid


@dataclass(frozen=True)
class GridCase:
    """One shape (and value) point of a graph's validation grid."""

    graph: str
    sizes: tuple[tuple[str, int], ...]
    lengths: tuple[tuple[str, tuple[int, ...]], ...] = ()
    timesteps: tuple[float, ...] | None = None
    timestep_r: tuple[float, ...] | None = None
    tag: str = ""
    seed: int = 0

    @property
    def spec(self) -> GraphSpec:
        return GRAPH_SPECS[self.graph]

    @property
    def size_map(self) -> dict[str, int]:
        return dict(self.sizes)

    @property
    def id(self) -> str:
        parts = [self.graph] + [f"{axis.replace('_', '')}{value}" for axis, value in self.sizes]
        return "-".join(parts + ([self.tag] if self.tag else []))

    def inputs(self, dims: Mapping[str, int], silence_latent: np.ndarray) -> dict[str, np.ndarray]:
        return make_inputs(self.spec, self.size_map, dims, seed=self.seed, silence_latent=silence_latent,
                           lengths=dict(self.lengths), timesteps=self.timesteps, timestep_r=self.timestep_r)


def _case(graph: str, tag: str = "", lengths: Mapping[str, tuple[int, ...]] | None = None,
          timesteps: tuple[float, ...] | None = None, timestep_r: tuple[float, ...] | None = None,
          **sizes: int) -> GridCase:
    order = [a for a in GRAPH_SPECS[graph].dynamic_axes if a in sizes]
    seed = 1 + sum(ord(c) for c in graph) + sum(sizes.values()) * 7 + len(tag)
    return GridCase(graph, tuple((a, sizes[a]) for a in order), tuple((lengths or {}).items()), timesteps,
                    timestep_r, tag, seed)


def _schedule_cases() -> list[GridCase]:
    """Every timestep of the three turbo schedules, one DiT evaluation each (r = t, as the host passes)."""
    out = []
    for shift, values in SHIFT_TIMESTEPS.items():
        for i, t in enumerate(values):
            out.append(_case("dit_decoder", f"shift{int(shift)}-i{i}", timesteps=(t,), B=1, T=33, T_enc=12))
    return out


GRID: list[GridCase] = [
    # text encoder: short / long prompts, beyond the host's 256-token truncation, batch 1 and 2
    _case("text_encoder", B=1, T_text=1),
    _case("text_encoder", B=1, T_text=7),
    _case("text_encoder", B=2, T_text=77),
    _case("text_encoder", B=1, T_text=256),
    _case("text_encoder", B=2, T_text=300),
    # lyric embedding: a Gather; 1 token up to the 2048-token limit
    _case("lyric_embedding", B=1, T_lyric=1),
    _case("lyric_embedding", B=2, T_lyric=64),
    _case("lyric_embedding", B=1, T_lyric=2048),
    # condition encoder: unpadded and right-padded batches (the packing moves valid tokens first)
    _case("condition_encoder", B=1, T_text=7, T_lyric=64),
    _case("condition_encoder", "padded", {"text_attention_mask": (23, 15), "lyric_attention_mask": (300, 120)},
          B=2, T_text=23, T_lyric=300),
    _case("condition_encoder", "padded", {"text_attention_mask": (9, 31, 31), "lyric_attention_mask": (5, 77, 50)},
          B=3, T_text=31, T_lyric=77),
    _case("condition_encoder", B=2, T_text=256, T_lyric=2048),
    # DiT: sliding-window edges (tiny window = 16 patched frames: T 30/32/34 -> S 15/16/17, odd 33 -> S 17),
    # odd and tile-crossing lengths, batch 1 and 2, short and long conditions
    _case("dit_decoder", B=1, T=30, T_enc=12),
    _case("dit_decoder", B=1, T=32, T_enc=12),
    _case("dit_decoder", B=1, T=34, T_enc=12),
    _case("dit_decoder", B=2, T=33, T_enc=12),
    _case("dit_decoder", B=1, T=1, T_enc=1),
    _case("dit_decoder", B=2, T=127, T_enc=40),
    _case("dit_decoder", B=1, T=128, T_enc=7),
    _case("dit_decoder", B=2, T=155, T_enc=40),
    _case("dit_decoder", B=1, T=256, T_enc=300),
    _case("dit_decoder", B=2, T=300, T_enc=77),
    _case("dit_decoder", "mixed-t", timesteps=(1.0, 0.3), B=2, T=64, T_enc=20),
    _case("dit_decoder", "r0", timesteps=(0.75,), timestep_r=(0.0,), B=1, T=64, T_enc=20),
    *_schedule_cases(),
    # VAE decoder: single frame, odd, around the 256-frame CPU tile, batch 1 and 2
    _case("vae_decoder", B=1, T=1),
    _case("vae_decoder", B=1, T=33),
    _case("vae_decoder", B=2, T=127),
    _case("vae_decoder", B=1, T=128),
    _case("vae_decoder", B=1, T=155),
    _case("vae_decoder", B=2, T=256),
    _case("vae_decoder", B=1, T=300),
    # 5 Hz LM: one-token and long prompts, batch 1 and 2; decode with a one-position cache, one and several new
    # tokens, caches around the planner's real lengths (prompt ~60 + up to 3500 generated)
    _case("lm_prefill", B=1, T_lm=1),
    _case("lm_prefill", B=1, T_lm=64),
    _case("lm_prefill", B=2, T_lm=300),
    _case("lm_decode", B=1, T_lm=1, P_lm=1),
    _case("lm_decode", B=1, T_lm=1, P_lm=64),
    _case("lm_decode", B=2, T_lm=4, P_lm=500),
    _case("lm_decode", B=1, T_lm=1, P_lm=3600),
]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dims(reference_models) -> dict[str, int]:
    return config_dims(reference_models.dit_config, reference_models.text_config, reference_models.lm_config)


def _load_proto(path: Path):
    return onnx.load(str(path), load_external_data=False)


# ------------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("graph", list(GRAPH_SPECS))
def test_graph_contract(graph: str, onnx_artifacts: Path, onnx_manifest: dict, dims, record_property):
    """checker passes; the graph's I/O, the manifest record and the spec agree; the file is the recorded one."""
    from acestep_parity.exporters.export import compare_io, graph_io_from_proto, sha256_file

    spec = GRAPH_SPECS[graph]
    path = onnx_artifacts / spec.filename
    onnx.checker.check_model(str(path), full_check=True)
    record = onnx_manifest["graphs"][graph]
    for entry in record["files"]:
        assert sha256_file(onnx_artifacts / entry["file"]) == entry["sha256"], f"{entry['file']} != manifest"
    proto = _load_proto(path)
    assert compare_io(spec, dims, graph_io_from_proto(proto)) == []
    assert {"inputs": record["inputs"], "outputs": record["outputs"]} == spec.io_json(dims)
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    assert opsets["ai.onnx"] == OPSET == record["opset"]
    assert record["exporter_path"] == "dynamo"
    assert not [i.name for i in proto.graph.initializer if i.name.endswith(("weight_g", "weight_v"))]
    record_property("opset", OPSET)
    record_property("sha256", record["sha256"])


def test_manifest_settings_and_versions(onnx_manifest: dict):
    """The manifest locks opset, exporter settings, ORT session options and library versions."""
    assert onnx_manifest["exporter_settings"] == EXPORTER.to_json()
    assert onnx_manifest["ort_session"] == ORT.to_json()
    for lib in ("torch", "onnx", "onnxscript", "onnxruntime", "transformers", "diffusers"):
        assert onnx_manifest["versions"].get(lib), f"manifest lacks the {lib} version"
    assert list(onnx_manifest["graphs"]) == list(GRAPH_SPECS)


def test_io_contract_doc_matches_spec_and_manifest(onnx_manifest: dict, dims):
    """docs/io_contract.md's table == exporters/specs.py == manifest (the graphs are checked against both above)."""
    rows = parse_io_table((DOCS / "io_contract.md").read_text(encoding="utf-8"))
    expected = [(s.name, s.filename, d, t.name, t.dtype, list(t.shape)) for s in GRAPH_SPECS.values()
                for d, ts in (("input", s.inputs), ("output", s.outputs)) for t in ts]
    got = [(r["graph"], r["file"], r["direction"], r["name"], r["dtype"], r["shape"]) for r in rows]
    missing = [e for e in expected if e not in got]
    extra = [g for g in got if g not in expected]
    assert not missing and not extra, (f"docs/io_contract.md disagrees with exporters/specs.py: missing/changed "
                                       f"{missing}, not in the spec {extra} (regenerate: acestep-export "
                                       f"--print-contract)")
    for row in rows:
        record = onnx_manifest["graphs"][row["graph"]]
        assert record["file"] == row["file"]
        listed = {t["name"]: t for t in record[row["direction"] + "s"]}
        spec_tensor = GRAPH_SPECS[row["graph"]].tensor(row["name"])
        assert listed[row["name"]]["dtype"] == row["dtype"]
        assert listed[row["name"]]["shape"] == spec_tensor.resolved_shape(dims), format_shape(row["shape"])


def test_io_contract_doc_tables_are_current():
    """The whole marked block (I/O, axis and config-dim tables) is exactly what the spec renders."""
    from acestep_parity.exporters.contract import BEGIN, END, render_tables

    text = (DOCS / "io_contract.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == render_tables(), "docs/io_contract.md is stale: paste `acestep-export --print-contract`"


def test_tokenizer_conventions_of_the_contract(checkpoint_dir: Path):
    """The tokenizer normalisation docs/io_contract.md states holds for the checkpoint's tokenizer: NFC,
    byte-level BPE, a TemplateProcessing post-processor appending <|endoftext|>, truncation keeping it, and
    pad id = <|endoftext|>."""
    from transformers import AutoTokenizer

    from acestep_ort.host import prompts
    from acestep_parity.checkpoint import TEXT_DIR

    folder = checkpoint_dir / TEXT_DIR
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["normalizer"]["type"] == "NFC"
    assert spec["model"]["type"] == "BPE"
    assert "ByteLevel" in json.dumps(spec["pre_tokenizer"])
    assert spec["post_processor"]["type"] == "TemplateProcessing"
    assert spec["post_processor"]["single"][-1] == {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.pad_token_id == eot

    def ids(text: str, limit: int) -> list[int]:
        return tokenizer(text, padding="longest", truncation=True, max_length=limit)["input_ids"]

    assert ids("caf\u00e9", 16) == ids("cafe\u0301", 16)  # NFC
    long_caption = prompts.caption_prompt("warm analog synth pads " * 200, prompts.metas_string(120))
    caption = ids(long_caption, prompts.TEXT_MAX_TOKENS)
    assert len(caption) == prompts.TEXT_MAX_TOKENS and caption[-1] == eot  # truncation keeps the appended token
    lyric = ids(prompts.lyric_prompt("la la la"), prompts.LYRIC_MAX_TOKENS)
    assert lyric[-2:] == [eot, eot]  # the prompt's literal <|endoftext|> + the appended one
    assert tokenizer.bos_token_id is None or tokenizer.bos_token_id not in caption[:1]


# -------------------------------------------------------------------------------------------- parity grid


def _gates(tolerances, tensor: str):
    return tolerances.gates(PAIR, PROFILE, tensor, case_id=None)


@pytest.mark.parametrize("grid_case", GRID, ids=lambda c: c.id)
def test_graph_parity(grid_case: GridCase, onnx_artifacts: Path, onnx_session, reference_models, dims, tolerances,
                      record_property, request):
    """One graph at one grid shape vs its PyTorch module: contract of the run first, then gated values."""
    from acestep_parity.exporters.export import graph_module
    from acestep_parity.exporters.validate import check_outputs, run_graph

    spec = grid_case.spec
    inputs = grid_case.inputs(dims, reference_models.silence_latent)
    expected = graph_module(spec).reference(reference_models, inputs)
    outputs = run_graph(onnx_session(spec.name), spec, inputs)
    record_property("ort_graph_optimization_level", ORT.graph_optimization_level)
    record_property("ort_threads", f"{ORT.intra_op_num_threads}/{ORT.inter_op_num_threads}")
    problems = check_outputs(spec, grid_case.size_map, dims, outputs)
    assert not problems, "\n".join(problems)
    for name in spec.output_names:
        assert outputs[name].shape == expected[name].shape and outputs[name].dtype == expected[name].dtype, name
    failures, thresholds = [], []
    for name in spec.output_names:
        gates = _gates(tolerances, name)
        rows = parity.evaluate(expected[name], outputs[name], gates, case=grid_case.id, tensor=name, pair=PAIR,
                               profile=PROFILE)
        for row in rows:
            record_property(f"{name}.{row.metric}", row.value)
            record_property(f"{name}.{row.metric}.gate", row.gate)
        if any(r.verdict == "fail" for r in rows):
            failures.append(parity.failure_message(rows, gates))
            thresholds.append(gates["max_abs"].value if "max_abs" in gates else 1e-4)
    if failures:
        from acestep_parity.exporters.diagnose import first_divergence

        report = first_divergence(spec, reference_models, onnx_artifacts / spec.filename, inputs,
                                  threshold=min(thresholds))
        request.node.add_report_section("call", "first divergence", report)
        pytest.fail("\n".join(failures) + "\n\n" + report, pytrace=False)


# ---------------------------------------------------------------------------------------- grid properties


def test_grid_differs_from_export_shapes_and_covers_edges():
    """The grid never re-uses an export (dummy) shape, and it covers the edges the issue names."""
    for case in GRID:
        assert case.size_map != case.spec.export_sizes, f"{case.id} is the export shape"
        assert "step" not in case.id, f"{case.id}: 'step' is reserved for the per-step DiT tests (-k 'dit and step')"
    dit = [c for c in GRID if c.graph == "dit_decoder"]
    lengths = {c.size_map["T"] for c in dit}
    assert {30, 32, 33, 34, 127, 128, 155, 256, 300} <= lengths
    assert {1, 2} <= {c.size_map["B"] for c in dit}
    covered = {t for c in dit for t in (c.timesteps or ())}
    assert {t for values in SHIFT_TIMESTEPS.values() for t in values} <= covered
    assert any(c.lengths for c in GRID if c.graph == "condition_encoder")
    assert any(not c.lengths and c.size_map["B"] > 1 for c in GRID if c.graph == "condition_encoder")


def test_parity_coverage_complete(tolerances, request):
    """Every graph and every I/O name of the contract is exercised by at least one parity test: each graph has
    grid cases with batch 1 and > 1, every input is fed (inputs are generated from the spec), and every output
    has gates in the tolerance file (test_graph_parity compares every output it has gates for)."""
    for spec in GRAPH_SPECS.values():
        cases = [c for c in GRID if c.graph == spec.name]
        assert cases, f"{spec.name} has no parity test"
        assert {c.size_map["B"] for c in cases} & {1} and max(c.size_map["B"] for c in cases) > 1, spec.name
        for axis in spec.dynamic_axes:
            assert len({c.size_map[axis] for c in cases}) > 1, f"{spec.name}: axis {axis} is tested at one size"
        for tensor in spec.outputs:
            assert tolerances.has(PAIR, PROFILE, tensor.name), f"no {PAIR} gate for {spec.name}.{tensor.name}"
    items = [item for item in request.session.items
             if getattr(item, "originalname", "") == "test_graph_parity" and hasattr(item, "callspec")]
    if len(items) == len(GRID):  # nothing deselected (-k/-m): the collection itself must cover every graph
        assert {item.callspec.params["grid_case"].graph for item in items} == set(GRAPH_SPECS)


# ------------------------------------------------------------------------------------------- reproducible


def test_export_reproducible(checkpoint_dir: Path, onnx_manifest: dict, tmp_path: Path, record_property):
    """Exporting again gives byte-identical graphs: a fresh ``acestep-export --jobs 2`` (new interpreters, so no
    tracing state is shared with the fixture's export) must reproduce every file's SHA-256 in the manifest."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "acestep_parity.exporters.cli", "--checkpoint-dir", str(checkpoint_dir),
                           "--out", str(tmp_path), "--jobs", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"acestep-export failed:\n{proc.stderr[-4000:]}"
    again = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert again["key"] == onnx_manifest["key"], "the re-export ran with other settings/sources/versions"
    for name, record in onnx_manifest["graphs"].items():
        record_property(f"{name}.sha256", record["sha256"])
        assert again["graphs"][name]["files"] == record["files"], f"{name}: export is not reproducible"


def test_export_without_out_reuses_the_cache(checkpoint_dir: Path, onnx_artifacts: Path, capsys, record_property):
    """``acestep-export`` without ``--out`` writes into the folder pytest and both runtimes use (their default
    ``--onnx-dir``): here the suite's own export, so it is found and reused, not exported again."""
    from acestep_parity.exporters.cli import main

    assert main(["--checkpoint-dir", str(checkpoint_dir)]) == 0
    out = capsys.readouterr()
    assert Path(out.out.strip()) == onnx_artifacts
    assert "already exported, reused" in out.err
    record_property("folder", out.out.strip())
    assert main(["--checkpoint-dir", str(checkpoint_dir), "--graphs", "vae_decoder"]) == 2
    assert "need --out" in capsys.readouterr().err


def test_external_data_path(reference_models, onnx_artifacts: Path, onnx_session, dims, tmp_path: Path):
    """A forced size threshold writes <graph>.onnx + <graph>.onnx.data on the tiny model; the checker, ORT and
    the outputs (bit-exact vs the inline artifact) all accept it."""
    from acestep_parity.exporters.export import export_graph, sha256_file
    from acestep_parity.exporters.validate import open_session, run_graph

    settings = dataclasses.replace(EXPORTER, external_data_threshold_bytes=0)
    for graph in ("lyric_embedding", "text_encoder"):
        spec = GRAPH_SPECS[graph]
        record = export_graph(spec, reference_models, tmp_path, settings)
        data = tmp_path / f"{spec.filename}.data"
        assert record["external_data"] and data.is_file()
        assert [f["file"] for f in record["files"]] == [spec.filename, data.name]
        assert record["files"][1]["sha256"] == sha256_file(data)
        proto = _load_proto(tmp_path / spec.filename)
        external = [i.name for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        assert external, f"{graph}: no initializer went to external data"
        assert all(e.value == data.name for i in proto.graph.initializer for e in i.external_data
                   if e.key == "location"), "external data must sit beside the graph, under a relative name"
        onnx.checker.check_model(str(tmp_path / spec.filename), full_check=True)
        case = next(c for c in GRID if c.graph == graph)
        inputs = case.inputs(dims, reference_models.silence_latent)
        got = run_graph(open_session(tmp_path / spec.filename), spec, inputs)
        want = run_graph(onnx_session(graph), spec, inputs)
        for name in spec.output_names:
            np.testing.assert_array_equal(got[name], want[name])


# ------------------------------------------------------------------------------------------ static batch


def test_misdeclared_batch_axis_is_caught(reference_models, dims, tmp_path: Path, record_property):
    """An export whose batch axis is left out of dynamic_shapes (specialised to the dummy B=2) is reported by
    the contract check and by the shape grid (ORT refuses B=1) -- the grid exists to catch exactly this."""
    from acestep_parity.exporters.export import compare_io, graph_io_from_proto, save_graph, trace_graph
    from acestep_parity.exporters.validate import grid_check, open_session

    spec = GRAPH_SPECS["lyric_embedding"]
    broken = trace_graph(spec, reference_models, static_axes=("B",))
    save_graph(broken, tmp_path)
    io_problems = compare_io(spec, dims, graph_io_from_proto(_load_proto(tmp_path / spec.filename)))
    assert any("input_ids: shape [2, 'T_lyric'] != spec ['B', 'T_lyric']" in p for p in io_problems), io_problems
    grid = [(c.size_map, c.inputs(dims, reference_models.silence_latent)) for c in GRID if c.graph == spec.name]
    problems = grid_check(open_session(tmp_path / spec.filename), spec, grid, dims)
    record_property("grid_problems", json.dumps(problems))
    assert problems, "a graph with a static batch axis passed the shape grid"
    assert all("B': 1" in p or "'B': 1" in p for p in problems), problems
    assert any("input_ids" in p and "Got: 1 Expected: 2" in p for p in problems), problems


# ------------------------------------------------------------------------------------ rewrites vs diffusers


PACK_MASKS = {
    "unpadded-B1": ([[1] * 6], [[1] * 4]),
    "padded-B2": ([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], [[1, 1, 1, 0], [1, 1, 1, 1]]),
    "padded-B3": ([[1, 0, 0, 0, 0, 0], [1] * 6, [1, 1, 1, 0, 0, 0]], [[1, 1, 0, 0], [1, 0, 0, 0], [1] * 4]),
    "holes-B2": ([[0, 1, 0, 1, 1, 0], [1, 0, 1, 0, 1, 0]], [[0, 1, 1, 0], [1, 0, 0, 1]]),
}


@pytest.mark.parametrize("masks", list(PACK_MASKS), ids=str)
def test_condition_packing_equals_diffusers(masks: str):
    """cumsum/scatter/gather packing + one-timbre-per-item unpacking == diffusers' two stable-argsort packs and
    bincount unpacking, on unpadded and padded batches (and masks with holes), bit for bit."""
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepTimbreEncoder, _pack_sequences

    from acestep_parity.exporters.condition_encoder import pack_valid_first, unpack_one_per_item

    lyric_mask, text_mask = (torch.tensor(m, dtype=torch.long) for m in PACK_MASKS[masks])
    batch, hidden = lyric_mask.shape[0], 5
    gen = torch.Generator().manual_seed(7)
    lyric = torch.randn(batch, lyric_mask.shape[1], hidden, generator=gen)
    text = torch.randn(batch, text_mask.shape[1], hidden, generator=gen)
    pooled = torch.randn(batch, hidden, generator=gen)
    timbre_ref, timbre_mask_ref = AceStepTimbreEncoder.unpack_timbre_embeddings(pooled, torch.arange(batch))
    timbre, timbre_mask = unpack_one_per_item(pooled)
    assert torch.equal(timbre, timbre_ref) and torch.equal(timbre_mask, timbre_mask_ref)
    ref, ref_mask = _pack_sequences(lyric, timbre_ref, lyric_mask, timbre_mask_ref)
    ref, ref_mask = _pack_sequences(ref, text, ref_mask, text_mask)
    got, got_mask = pack_valid_first(torch.cat([lyric, timbre, text], 1),
                                     torch.cat([lyric_mask, timbre_mask, text_mask], 1))
    assert torch.equal(got, ref) and torch.equal(got_mask, ref_mask) and got_mask.dtype == ref_mask.dtype


def test_condition_wrapper_equals_module_in_torch(reference_models, dims):
    """The export wrapper, run in PyTorch, reproduces the diffusers module exactly on a padded batch."""
    from acestep_parity.exporters import condition_encoder

    case = next(c for c in GRID if c.graph == "condition_encoder" and c.lengths)
    inputs = case.inputs(dims, reference_models.silence_latent)
    expected = condition_encoder.reference(reference_models, inputs)
    with torch.inference_mode():
        enc, mask = condition_encoder.build(reference_models)(*(torch.from_numpy(inputs[n])
                                                                for n in case.spec.input_names))
    np.testing.assert_array_equal(enc.numpy(), expected["encoder_hidden_states"])
    np.testing.assert_array_equal(mask.numpy(), expected["encoder_attention_mask"])


def test_dit_wrapper_equals_module_in_torch(reference_models, dims, tolerances, record_property):
    """The DiT wrapper (odd-T pre-padding, torch-computed timestep frequency table), run in PyTorch, reproduces
    the diffusers module bit for bit at odd and even T with upstream's attention, and within the graph's own
    onnx~torch gate with the exported attention forms (banded sliding window, SDPA for the full layers: the sums run
    in another order); the reference module keeps its own processors and sinusoids."""
    from acestep_parity.exporters import dit_decoder

    exact = dit_decoder.DitDecoderGraph(reference_models.transformer, scalable_attention=False).eval()
    wrapper = dit_decoder.build(reference_models)
    assert type(reference_models.transformer.time_embed.time_sinusoid).__name__ == "Timesteps"
    assert all(type(layer.self_attn.processor).__name__ == "AceStepAttnProcessor2_0"
               for layer in reference_models.transformer.layers)
    assert all(type(layer.self_attn.processor).__name__ == "ExportAttnProcessor"
               for layer in wrapper.transformer.layers)
    limit = _gates(tolerances, "vt")["max_abs"].value
    worst = 0.0
    for case in (c for c in GRID if c.graph == "dit_decoder" and c.tag in ("mixed-t", "r0", "")):
        inputs = case.inputs(dims, reference_models.silence_latent)
        expected = dit_decoder.reference(reference_models, inputs)["vt"]
        feeds = [torch.from_numpy(inputs[n]) for n in case.spec.input_names]
        with torch.inference_mode():
            np.testing.assert_array_equal(exact(*feeds).numpy(), expected, err_msg=case.id)
            worst = max(worst, float(np.abs(wrapper(*feeds).numpy() - expected).max()))
    record_property("exported_attention_in_torch_max_abs", worst)
    assert worst <= limit, f"the exported attention forms move vt by {worst:.3g} in torch (gate {limit:.3g})"


@pytest.mark.parametrize("length", [1, 5, 16, 17, 40, 100])
def test_banded_attention_equals_the_dense_sliding_mask(length):
    """The blocked band gives what SDPA gives with upstream's dense sliding-window mask (finfo.min outside
    |i - j| <= window), GQA included, for lengths below, at and across block boundaries."""
    from acestep_parity.exporters.dit_decoder import banded_attention

    window = 8
    torch.manual_seed(length)
    q, k, v = torch.randn(2, length, 4, 16), torch.randn(2, length, 2, 16), torch.randn(2, length, 2, 16)
    i = torch.arange(length)
    mask = torch.zeros(length, length).masked_fill((i[:, None] - i[None, :]).abs() > window,
                                                   torch.finfo(torch.float32).min)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=0.25, enable_gqa=True)
    got = banded_attention(q, k, v, 0.25, window)
    assert got.shape == q.shape
    err = np.abs(got.numpy() - dense.transpose(1, 2).numpy()).max()
    assert err <= 16 * np.finfo(np.float32).eps * np.abs(dense.numpy()).max(), err  # float rounding, not a gate


def test_vae_weight_norm_folded_exactly(reference_models):
    """Folding writes exactly the hook's weight (per output channel for Conv1d, per INPUT channel for
    ConvTranspose1d) into every weight-normed layer, and leaves the reference module's hooks in place."""
    from acestep_parity.exporters.vae_decoder import fold_weight_norm

    vae = reference_models.vae
    hooked = {name: m for name, m in vae.named_modules() if hasattr(m, "weight_g")}
    folded, count = fold_weight_norm(vae)
    assert count == len(hooked) > 0
    transposed = 0
    for name, module in folded.named_modules():
        if name not in hooked:
            continue
        ref = hooked[name]
        assert not hasattr(module, "weight_g") and hasattr(ref, "weight_g")
        v, g = ref.weight_v.detach(), ref.weight_g.detach()
        assert torch.equal(module.weight.detach(), torch._weight_norm(v, g, 0))
        if isinstance(module, torch.nn.ConvTranspose1d):
            transposed += 1
            assert g.shape == (v.shape[0], 1, 1) and v.shape[0] == module.in_channels
    assert transposed > 0


# ------------------------------------------------------------------------------------ first divergence


def test_first_divergence_names_the_perturbed_layer(reference_models, onnx_artifacts: Path, dims):
    """The failure diagnostic names the first diverging intermediate: perturb layer 1's MLP of the reference
    text encoder after export, and the report's FIRST line must point into ``layers.1.mlp``."""
    import copy

    from acestep_parity.exporters.diagnose import first_divergence

    text_encoder = copy.deepcopy(reference_models.text_encoder)
    with torch.no_grad():
        text_encoder.layers[1].mlp.down_proj.weight.add_(0.05)
    perturbed = dataclasses.replace(reference_models, text_encoder=text_encoder)
    spec = GRAPH_SPECS["text_encoder"]
    case = next(c for c in GRID if c.graph == "text_encoder" and c.size_map["T_text"] > 1)
    report = first_divergence(spec, perturbed, onnx_artifacts / spec.filename,
                              case.inputs(dims, reference_models.silence_latent), threshold=1e-5)
    first = next(line for line in report.splitlines() if "FIRST:" in line)
    assert "layers.1.mlp" in first, report
    assert "top 8 by max_abs" in report


# ------------------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_full_preset_export_with_external_data(tmp_path_factory, record_property):
    """The full-dimension synthetic preset (~12 GB, the real model's dimensions): every graph exports, graphs
    over the threshold are written with external data, the checker accepts them. ``pytest -m slow``."""
    import resource
    import shutil
    import time

    from acestep_parity.exporters.export import export_all
    from acestep_parity.paths import ensure_synthetic_checkpoint

    checkpoint = ensure_synthetic_checkpoint("full")
    out = tmp_path_factory.mktemp("full-export")
    try:
        start = time.perf_counter()
        manifest = export_all(checkpoint, out)
        record_property("export_seconds", round(time.perf_counter() - start, 1))
        record_property("peak_rss_gb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1))
        for name, record in manifest["graphs"].items():
            record_property(f"{name}.bytes", sum(f["bytes"] for f in record["files"]))
            record_property(f"{name}.export_seconds", record["export_seconds"] + record["save_seconds"])
            assert record["external_data"] == (record["initializer_bytes"] > EXPORTER.external_data_threshold_bytes)
            if record["external_data"]:
                assert (out / f"{record['file']}.data").is_file()
            onnx.checker.check_model(str(out / record["file"]))
        assert manifest["graphs"]["dit_decoder"]["external_data"]
    finally:
        shutil.rmtree(out, ignore_errors=True)  # ~11 GB; pytest would keep it among the last three basetemps


@pytest.mark.parametrize("stride", [2, 3, 4, 6, 10])
def test_vae_conv_transpose_as_sub_pixel_conv(stride):
    """The exported form of each upsampling ConvTranspose1d (kernel 2s, padding ceil(s/2)) is the same linear map:
    equal to torch's conv_transpose1d up to the order of the sums, length included, odd strides too."""
    import math

    from acestep_parity.exporters.vae_decoder import SubPixelConvTranspose1d

    torch.manual_seed(stride)
    conv_t = torch.nn.ConvTranspose1d(24, 16, 2 * stride, stride=stride, padding=math.ceil(stride / 2))
    x = torch.randn(2, 24, 37)
    with torch.no_grad():
        expected, got = conv_t(x), SubPixelConvTranspose1d(conv_t)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5 * expected.abs().max().item()
    with pytest.raises(ValueError, match="kernel 2\\*stride"):
        SubPixelConvTranspose1d(torch.nn.ConvTranspose1d(4, 4, 3, stride=stride))


def test_vae_graph_has_no_conv_transpose(reference_models):
    """Every ConvTranspose1d of the decoder is replaced in the export copy, none in the reference module."""
    from acestep_parity.exporters.vae_decoder import VaeDecoderGraph

    graph = VaeDecoderGraph(reference_models.vae)
    assert graph.sub_pixel == len(reference_models.vae.config.downsampling_ratios)
    assert not any(isinstance(m, torch.nn.ConvTranspose1d) for m in graph.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose1d) for m in reference_models.vae.modules())
