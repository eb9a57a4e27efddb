"""The ONNX Runtime engine: five graphs behind the shared host orchestration, noise from the numpy clone.

An ONNX folder is self-contained: the graphs (``text_encoder``, ``lyric_embedding``, ``condition_encoder``,
``dit_decoder``, ``vae_decoder``), ``manifest.json`` (the I/O contract) and the host assets copied from the
checkpoint (``tokenizer.json``, ``tokenizer_config.json``, ``silence_latent.pt``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acestep_ort.host.assets import missing_assets, onnx_folder_hint
from acestep_ort.host.noise import prepare_noise
from acestep_ort.host.pipeline import Captures, GenerationRequest, run_text2music
from acestep_ort.host.tiling import VaeChunking, VaeShape
from acestep_ort.host.tokenizer import TextTokenizer
from acestep_ort.host.torch_file import load_tensor
from acestep_ort.session_manager import SessionConfig, SessionManager


class OrtEngine:
    """Implements :class:`acestep_ort.host.pipeline.Engine` on ONNX Runtime sessions."""

    name = "py_ort"

    def __init__(self, sessions: SessionManager, tokenizer: TextTokenizer, silence_latent: np.ndarray,
                 onnx_dir: Path | None = None, config: SessionConfig | None = None,
                 vae_chunking: VaeChunking | None = None):
        self.sessions = sessions
        self.onnx_dir = onnx_dir
        self.config = config
        self._lm = None
        self.tokenizer = tokenizer
        self.silence_latent = silence_latent
        self.pad_id = tokenizer.pad_id
        self.vae_chunking = vae_chunking or VaeChunking.from_env()
        # an older manifest without "vae_shape" sizes the budget for the real 128-channel decoder (an upper bound)
        shape = sessions.contract.get("vae_shape")
        self.vae_shape = VaeShape.from_config(shape) if shape else VaeShape()
        self.vae_chunk = self.vae_chunking.chunk_size(self.vae_shape)

    def tokenize(self, text: str, max_length: int) -> np.ndarray:
        return self.tokenizer.encode(text, max_length)

    def encode_text(self, input_ids: np.ndarray) -> np.ndarray:
        return self.sessions.run("text_encoder", {"input_ids": input_ids.astype(np.int64)})[0]

    def embed_lyrics(self, input_ids: np.ndarray) -> np.ndarray:
        return self.sessions.run("lyric_embedding", {"input_ids": input_ids.astype(np.int64)})[0]

    def encode_condition(self, text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
                         timbre_reference, timbre_order):
        if not np.array_equal(timbre_order, np.arange(len(timbre_order))):
            raise ValueError("condition_encoder.onnx takes one timbre reference per item in batch order")
        dtype = self.sessions.input_dtype
        feeds = {
            "text_hidden_states": text_hidden_states.astype(np.float32),
            "text_attention_mask": text_attention_mask.astype(dtype("condition_encoder", "text_attention_mask")),
            "lyric_hidden_states": lyric_hidden_states.astype(np.float32),
            "lyric_attention_mask": lyric_attention_mask.astype(dtype("condition_encoder", "lyric_attention_mask")),
            "timbre_reference": timbre_reference.astype(np.float32),
        }
        enc, mask = self.sessions.run("condition_encoder", feeds)
        return enc, mask.astype(bool)

    def noise(self, seeds: tuple[int, ...], frames: int) -> np.ndarray:
        return prepare_noise(list(seeds), frames)

    def dit(self, xt, t, encoder_hidden_states, context_latents):
        feeds = {"hidden_states": xt.astype(np.float32), "timestep": t.astype(np.float32),
                 "timestep_r": t.astype(np.float32),
                 "encoder_hidden_states": encoder_hidden_states.astype(np.float32),
                 "context_latents": context_latents.astype(np.float32)}
        return self.sessions.run("dit_decoder", feeds)[0]

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        return self.sessions.run("vae_decoder", {"latents": latents.astype(np.float32)})[0]

    def generate(self, request: GenerationRequest, progress=None) -> Captures:
        return run_text2music(self, request, self.silence_latent, self.pad_id, progress=progress,
                              vae_chunk=self.vae_chunk)

    @property
    def lm(self):
        """The planner graphs (``lm_prefill``/``lm_decode``), opened on first use."""
        if self._lm is None:
            from acestep_ort.lm import OrtLm

            self._lm = OrtLm(self.onnx_dir, self.config)
        return self._lm

    def generate_simple(self, case, progress=None) -> Captures:
        return self.lm.simple_mode(case, lambda request: self.generate(request, progress=progress))


def load_engine(onnx_dir: Path, config: SessionConfig | None = None,
                vae_chunking: VaeChunking | None = None) -> OrtEngine:
    """Open an ONNX folder (graphs + manifest + assets) as an engine."""
    onnx_dir = Path(onnx_dir)
    missing = missing_assets(onnx_dir)
    if missing:
        hint = onnx_folder_hint(onnx_dir) or "; export with `acestep-export` (it copies them)"
        raise FileNotFoundError(f"{onnx_dir} is not an exported ONNX folder: it lacks {', '.join(missing)}{hint}")
    sessions = SessionManager.from_dir(onnx_dir, config)
    tokenizer = TextTokenizer(onnx_dir / "tokenizer.json", onnx_dir / "tokenizer_config.json")
    return OrtEngine(sessions, tokenizer, load_tensor(onnx_dir / "silence_latent.pt").astype(np.float32), onnx_dir,
                     config, vae_chunking)
