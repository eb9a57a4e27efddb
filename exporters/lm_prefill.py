"""``lm_prefill.onnx``: the 5 Hz LM on the prompt (no cache in), last-position logits and the KV cache out.

See :mod:`acestep_parity.exporters.lm_common`. Prefill and decode are two graphs rather than one merged graph because a merged
graph needs an empty past (P = 0) on its first call, and ``torch.export`` cannot declare a dynamic axis that
takes the value 0 (sizes 0 and 1 are specialised); feeding a dummy one-token past instead would change the
attention of the first step.
"""

from __future__ import annotations

import numpy as np
import torch

from acestep_parity.exporters import lm_common


class LmPrefillGraph(lm_common.LmGraph):
    def forward(self, input_ids: torch.Tensor):
        return self.run(input_ids, None, None)


def build(models) -> torch.nn.Module:
    lm_common.check_attention(models)
    return LmPrefillGraph(models.lm).eval()


def reference(models, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return lm_common.reference(models, inputs["input_ids"])
