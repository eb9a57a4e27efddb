"""``lm_decode.onnx``: the 5 Hz LM on new token(s) with the KV cache in and out (one token per host step).

See :mod:`acestep_parity.exporters.lm_common`: ``past_keys``/``past_values`` are the stacked cache of every layer, the outputs
are the same with the new positions appended (P + T), so the host feeds ``present_*`` back as ``past_*``.
"""

from __future__ import annotations

import numpy as np
import torch

from acestep_parity.exporters import lm_common


class LmDecodeGraph(lm_common.LmGraph):
    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor):
        return self.run(input_ids, past_keys, past_values)


def build(models) -> torch.nn.Module:
    lm_common.check_attention(models)
    return LmDecodeGraph(models.lm).eval()


def reference(models, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return lm_common.reference(models, inputs["input_ids"], inputs["past_keys"], inputs["past_values"])
