"""The PyTorch reference engine: the library modules behind the shared host orchestration.

Neural stages come from diffusers (``AceStepTransformer1DModel``, ``AceStepConditionEncoder``,
``AutoencoderOobleck``) and transformers (``Qwen3Model``, ``AutoTokenizer``), loaded strictly from the upstream
layout; host logic is :mod:`acestep_ort.host`. Noise uses torch's own CPU generator, one
``torch.Generator("cpu").manual_seed(seed)`` per batch item, as upstream ``prepare_noise`` does with a seed list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from acestep_ort.host.pipeline import Captures, GenerationRequest, run_text2music
from acestep_parity.checkpoint import MODULE_NAMES, TEXT_DIR, ReferenceModels, load_reference_models


class TorchEngine:
    """Implements :class:`acestep_ort.host.pipeline.Engine` with PyTorch modules on CPU in float32."""

    name = "torch"

    def __init__(self, models: ReferenceModels):
        from transformers import AutoTokenizer

        self.models = models
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = AutoTokenizer.from_pretrained(str(models.root / TEXT_DIR), local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{models.root / TEXT_DIR}: tokenizer has no pad token")
        self.pad_id = int(self.tokenizer.pad_token_id)

    @property
    def silence_latent(self) -> np.ndarray:
        return self.models.silence_latent

    def tokenize(self, text: str, max_length: int) -> np.ndarray:
        enc = self.tokenizer(text, padding="longest", truncation=True, max_length=max_length)
        return np.asarray(enc["input_ids"], dtype=np.int64)

    @torch.inference_mode()
    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        # Upstream passes no attention mask (Qwen3 is causal, so right padding cannot reach valid tokens).
        out = self.models.text_encoder(input_ids=torch.from_numpy(input_ids))
        return out.last_hidden_state.float().numpy()

    @torch.inference_mode()
    def embed_lyrics(self, input_ids: np.ndarray) -> np.ndarray:
        # Lyric branch = token-embedding lookup only (upstream ``infer_lyric_embeddings``).
        return self.models.text_encoder.embed_tokens(torch.from_numpy(input_ids)).float().numpy()

    @torch.inference_mode()
    def encode_condition(self, text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
                         timbre_reference, timbre_order):
        enc, mask = self.models.condition_encoder(
            text_hidden_states=torch.from_numpy(text_hidden_states),
            text_attention_mask=torch.from_numpy(text_attention_mask).long(),
            lyric_hidden_states=torch.from_numpy(lyric_hidden_states),
            lyric_attention_mask=torch.from_numpy(lyric_attention_mask).long(),
            refer_audio_acoustic_hidden_states_packed=torch.from_numpy(timbre_reference),
            refer_audio_order_mask=torch.from_numpy(timbre_order),
        )
        return enc.float().numpy(), mask.bool().numpy()

    def noise(self, seeds: tuple[int, ...], frames: int) -> np.ndarray:
        items = []
        for seed in seeds:
            if seed is None or seed < 0:
                raise ValueError(f"seed {seed!r}: every item needs a non-negative seed for a reproducible run")
            generator = torch.Generator("cpu").manual_seed(int(seed))
            items.append(torch.randn((1, frames, 64), generator=generator, dtype=torch.float32))
        return torch.cat(items, dim=0).numpy()

    @torch.inference_mode()
    def dit(self, xt, t, encoder_hidden_states, context_latents):
        t_tensor = torch.from_numpy(t)
        out = self.models.transformer(
            hidden_states=torch.from_numpy(xt), timestep=t_tensor, timestep_r=t_tensor,
            encoder_hidden_states=torch.from_numpy(encoder_hidden_states),
            context_latents=torch.from_numpy(context_latents), return_dict=False,
        )[0]
        return out.float().numpy()

    @torch.inference_mode()
    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        return self.models.vae.decode(torch.from_numpy(latents)).sample.float().numpy()

    def generate(self, request: GenerationRequest, progress=None) -> Captures:
        return run_text2music(self, request, self.silence_latent, self.pad_id, progress=progress)

    @property
    def lm(self):
        """The 5 Hz LM planner (``acestep-5Hz-lm-0.6B``), loaded on first use: a text2music run does not hold its
        weights (2.2 GB at full size)."""
        if not hasattr(self, "_lm"):
            from acestep_parity.checkpoint import load_lm
            from acestep_parity.torch_ref.lm import TorchLm

            if self.models.lm is None:
                self.models.lm, self.models.lm_config = load_lm(self.models.root)
            self._lm = TorchLm(self.models.root, self.models.lm, self.models.lm_config)
        return self._lm

    def plan(self, case):
        from acestep_parity.torch_ref.planner import plan_case

        return plan_case(self.lm, self.models.root, case)

    def generate_simple(self, case, progress=None) -> Captures:
        """Simple mode: planner (chat template of the checkpoint, as upstream), then text2music."""
        from acestep_ort.host.lm_planner import run_simple_mode

        prompt = self.lm.tokenizer.chat_prompt(case.query, case.instrumental)
        return run_simple_mode(self.lm, self.lm.tokenizer, self.models.root, case,
                               lambda request: self.generate(request, progress=progress), prompt=prompt)


def load_engine(checkpoint_dir: Path) -> TorchEngine:
    """Every text2music module; the planner's LM is loaded when simple mode first needs it."""
    return TorchEngine(load_reference_models(Path(checkpoint_dir), modules=[m for m in MODULE_NAMES if m != "lm"]))
