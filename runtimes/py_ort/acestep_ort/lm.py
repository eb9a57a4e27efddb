"""The 5 Hz LM planner on ONNX Runtime: ``lm_prefill.onnx`` once, then ``lm_decode.onnx`` per token on the
KV cache (``present_*`` fed back as ``past_*``; the prefix is never recomputed). Torch-free.

Host logic (prompt, FSM, sampler, parsing) is :mod:`acestep_ort.host.lm_planner`, shared with the reference. The
tokenizer is the checkpoint's LM ``tokenizer.json`` through the ``tokenizers`` library; the prompt is the host's
rendering of Qwen3's chat template (the reference uses the checkpoint's template; a test asserts they agree).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acestep_ort.host import lm_planner
from acestep_ort.host.lm_tokenizer import LM_DIR, FastTokenizer
from acestep_ort.host.pipeline import Captures
from acestep_ort.session_manager import SessionConfig, SessionManager

LM_GRAPHS = ("lm_prefill", "lm_decode")


class OrtLm:
    """:class:`acestep_ort.host.lm_planner.LmEngine` on the two LM graphs."""

    def __init__(self, onnx_dir: Path, config: SessionConfig | None = None):
        onnx_dir = Path(onnx_dir)
        config = config or SessionConfig()
        self.sessions = SessionManager.from_dir(
            onnx_dir, config, LM_GRAPHS,
            missing_hint=f"the checkpoint had no {LM_DIR}/ when it was exported (simple mode needs the planner)")
        if not (onnx_dir / LM_DIR / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{onnx_dir / LM_DIR} lacks the LM tokenizer; re-export with `acestep-export`")
        self.onnx_dir = onnx_dir
        self.tokenizer = FastTokenizer(onnx_dir / LM_DIR)
        self._keys = self._values = None

    def lm_start(self, prompt_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        logits, self._keys, self._values = self.sessions.run("lm_prefill", {"input_ids": ids})
        return logits[0]

    def lm_next(self, token_id: int) -> np.ndarray:
        if self._keys is None:
            raise RuntimeError("lm_next before lm_start")
        feeds = {"input_ids": np.asarray([[token_id]], dtype=np.int64), "past_keys": self._keys,
                 "past_values": self._values}
        logits, self._keys, self._values = self.sessions.run("lm_decode", feeds)
        return logits[0]

    def plan(self, case) -> lm_planner.PlannerResult:
        req = lm_planner.case_request(case)
        tables = lm_planner.fsm_tables(self.tokenizer, self.onnx_dir, req.max_duration)
        return lm_planner.run_planner(self, self.tokenizer, tables, req)

    def simple_mode(self, case, text2music) -> Captures:
        return lm_planner.run_simple_mode(self, self.tokenizer, self.onnx_dir, case, text2music)
