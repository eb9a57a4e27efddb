"""Optional fidelity check: the PyTorch reference against upstream ACE-Step 1.5's own modeling code.

Runs only where the checkpoint folder carries upstream's ``acestep-v15-turbo/modeling_acestep_v15_turbo.py``
(the real Hugging Face checkpoint does; the synthetic one does not, so the tests skip there, saying how to
enable them). Upstream's ``AceStepConditionGenerationModel`` is then loaded from that folder with
``AutoModel.from_pretrained(..., trust_remote_code=True)`` on CPU in float32 and fed the very inputs our
reference produced for each text2music case (text / lyric hidden states and masks from our captures; timbre
reference, source latents and silence latent cut from ``silence_latent.pt`` the way upstream's handler does).
Its ``prepare_condition`` and ``generate_audio`` (turbo, ODE, 8 steps, its own KV cache) must reproduce our
``encoder_hidden_states``, ``encoder_attention_mask``, ``context_latents`` and ``pred_latents`` within the
``torch~upstream`` gates of ``cases/tolerances.json``.

Loading also proves the key mapping: upstream's model must take the folder's ``model.safetensors`` with no
missing, unexpected or mis-shaped key, so a synthetic checkpoint given upstream's code files really is in
upstream's layout.

To run it on the synthetic checkpoint: copy the tiny checkpoint somewhere, put upstream's
``acestep/models/turbo/modeling_acestep_v15_turbo.py`` and ``acestep/models/common/configuration_acestep_v15.py``
(the full class, not the turbo folder's one-line re-export) into its ``acestep-v15-turbo/`` folder,
``pip install vector-quantize-pytorch`` (brings ``einops``; upstream's module imports both), then
``pytest tests/test_upstream_fidelity.py --checkpoint-dir COPY``. Select these tests with ``-k upstream``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acestep_ort.host.case import Case, discover_cases
from acestep_parity import metrics

PAIR = "torch~upstream"
PROFILE = "fp32"
DIT_DIR = "acestep-v15-turbo"
UPSTREAM_MODEL_FILE = "modeling_acestep_v15_turbo.py"
UPSTREAM_CONFIG_FILE = "configuration_acestep_v15.py"
TIMBRE_FIX_FRAME = 750  # upstream handler: the text2music timbre reference is silence_latent[:, :750]
# Continuous tensors are gated with max_abs and rmse; the boolean mask with mismatches.
GATED_TENSORS = ("encoder_hidden_states", "encoder_attention_mask", "context_latents", "pred_latents")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per text2music case (``--case`` globs honoured), ids ``upstream-<case id>``."""
    if "upstream_case" not in metafunc.fixturenames:
        return
    found = discover_cases(Path(metafunc.config.getoption("--cases-dir")), metafunc.config.getoption("case_globs"))
    cases = [c for c in found if isinstance(c, Case) and c.task == "text2music"]
    metafunc.parametrize("upstream_case", [pytest.param(c, id=f"upstream-{c.id}") for c in cases])


def _enable_hint(checkpoint_dir) -> str:
    return (f"copy upstream ACE-Step 1.5's acestep/models/turbo/{UPSTREAM_MODEL_FILE} and "
            f"acestep/models/common/{UPSTREAM_CONFIG_FILE} (plus whatever they import) into "
            f"{checkpoint_dir / DIT_DIR} (their imports need `pip install vector-quantize-pytorch einops`), "
            "or point --checkpoint-dir at the real checkpoint, which ships them")


def _dtype_kwarg(torch) -> dict:
    """transformers >= 4.56 names the load dtype ``dtype``; upstream's older range (4.51-4.55) ``torch_dtype``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


@pytest.fixture(scope="module")
def upstream(checkpoint_dir):
    """``(model, loading_info)``: upstream's own model class loaded from the checkpoint folder, or a skip."""
    folder = checkpoint_dir / DIT_DIR
    missing = [name for name in (UPSTREAM_MODEL_FILE, UPSTREAM_CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"upstream fidelity check needs upstream's own model code, but {folder} lacks "
                    f"{' and '.join(missing)}: {_enable_hint(checkpoint_dir)}")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        pytest.skip(f"upstream fidelity check needs torch and transformers ({exc}); "
                    "install with `pip install -e '.[reference]'`")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        try:
            # attn_implementation="sdpa": upstream builds its own 4D masks for every implementation but
            # flash_attention_2, so sdpa (or eager) is its CPU path; naming it keeps a config that asks for
            # flash attention from selecting a kernel that cannot run on CPU.
            model, info = AutoModel.from_pretrained(
                str(folder), trust_remote_code=True, local_files_only=True, attn_implementation="sdpa",
                output_loading_info=True, **_dtype_kwarg(torch),
            )
        except ImportError as exc:
            # transformers checks the remote module's imports first and names the missing packages.
            pytest.skip(f"upstream's {UPSTREAM_MODEL_FILE} imports packages that are not installed: {exc} "
                        "(`pip install vector-quantize-pytorch einops`)")
    model = model.to("cpu").float().eval()
    return model, info


@pytest.fixture(scope="module")
def silence_latent(checkpoint_dir):
    """``silence_latent.pt`` as upstream's handler holds it: [1, frames, 64] float32."""
    import torch

    stored = torch.load(checkpoint_dir / DIT_DIR / "silence_latent.pt", map_location="cpu", weights_only=True)
    return stored.float().transpose(1, 2).contiguous()


@pytest.fixture(scope="module")
def reference(parity_session, pytestconfig):
    """The PyTorch reference backend of the session (its runs are cached and shared with the parity tests)."""
    selected = pytestconfig.getoption("--backend")
    if selected and "torch" not in selected:
        pytest.skip(f"the upstream fidelity check tests the torch reference; --backend {selected} excludes it")
    backend = parity_session.backend("torch", PROFILE)
    availability = backend.availability()
    if not availability.ok:
        pytest.skip(f"torch reference unavailable: {availability.reason}")
    return backend


def test_upstream_loads_checkpoint_strictly(upstream, checkpoint_dir):
    """Upstream's class takes model.safetensors as is: the checkpoint's key names and shapes are upstream's."""
    _, info = upstream
    problems = {k: v for k, v in info.items() if v}
    assert not problems, (f"upstream's AceStepConditionGenerationModel does not load "
                          f"{checkpoint_dir / DIT_DIR / 'model.safetensors'} cleanly: {problems}")


def _measure(tensor: str, ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    if ours.shape != theirs.shape:
        raise AssertionError(f"{tensor}: shape differs: reference {ours.shape} vs upstream {theirs.shape}")
    if tensor == "encoder_attention_mask":
        return {"mismatches": float(np.count_nonzero(ours.astype(bool) != theirs.astype(bool)))}
    return {"max_abs": metrics.max_abs(ours, theirs), "rmse": metrics.rmse(ours, theirs)}


def test_reference_matches_upstream(upstream_case: Case, upstream, silence_latent, reference, tolerances,
                                    record_property):
    """prepare_condition + generate_audio of upstream's own code vs our captures, same inputs, same seeds."""
    import torch

    model, _ = upstream
    case = upstream_case
    caps = reference.run_case(case)
    batch, frames = caps["noise"].shape[0], caps["noise"].shape[1]
    if frames > silence_latent.shape[1]:
        pytest.skip(f"{case.id}: {frames} latent frames exceed the silence latent ({silence_latent.shape[1]}); "
                    "upstream's handler tiles it, which this check does not reproduce")

    # What upstream's handler hands the model for text2music with no reference audio.
    src_latents = silence_latent[:, :frames].expand(batch, -1, -1).contiguous()
    inputs = dict(
        text_hidden_states=torch.from_numpy(caps["text_hidden_states"]),
        text_attention_mask=torch.from_numpy(caps["text_attention_mask"]).long(),
        lyric_hidden_states=torch.from_numpy(caps["lyric_hidden_states"]),
        lyric_attention_mask=torch.from_numpy(caps["lyric_attention_mask"]).long(),
        refer_audio_acoustic_hidden_states_packed=(
            silence_latent[:, :TIMBRE_FIX_FRAME].expand(batch, -1, -1).contiguous()),
        refer_audio_order_mask=torch.arange(batch, dtype=torch.long),
        src_latents=src_latents,
        chunk_masks=torch.ones(batch, frames, src_latents.shape[-1], dtype=torch.float32),
        is_covers=torch.zeros(batch, dtype=torch.long),
        silence_latent=silence_latent,
    )
    # The handler turns custom timesteps into a float32 tensor before generate_audio snaps them.
    timesteps = torch.tensor(case.timesteps, dtype=torch.float32) if case.timesteps else None
    with torch.inference_mode():
        enc, enc_mask, context = model.prepare_condition(
            hidden_states=src_latents, attention_mask=torch.ones(batch, frames, dtype=torch.float32), **inputs)
        out = model.generate_audio(**inputs, seed=list(case.seeds), infer_method="ode", audio_cover_strength=1.0,
                                   shift=case.shift, timesteps=timesteps)

    theirs = {"encoder_hidden_states": enc, "encoder_attention_mask": enc_mask, "context_latents": context,
              "pred_latents": out["target_latents"]}
    record_property("pair", PAIR)
    record_property("profile", PROFILE)
    failures = []
    for tensor in GATED_TENSORS:
        gates = tolerances.gates(PAIR, PROFILE, tensor, case.id)
        values = _measure(tensor, np.asarray(caps[tensor]), theirs[tensor].float().numpy())
        for metric, gate in gates.items():
            value = values[metric]
            record_property(f"{tensor}.{metric}", value)
            record_property(f"{tensor}.{metric}.gate", gate.value)
            if not gate.passes(value):
                failures.append(f"{tensor}: {metric} = {value:.3e}, gate {gate.describe()}")
    assert not failures, (f"{case.id}: the torch reference differs from upstream's own code "
                          f"(first listed = earliest stage): " + "; ".join(failures))
