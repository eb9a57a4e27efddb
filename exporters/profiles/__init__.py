"""Lighter ONNX profiles (fp16, int8_dynamic, int8_static) derived from the fp32 export (plan.md §15).

:func:`~acestep_parity.exporters.profiles.derive.ensure_profile` gives ``artifacts/<checkpoint-id>/<profile>`` beside the fp32
folder; ``acestep-export --profile NAME`` writes one anywhere. See docs/onnx_quantization.md.
"""

from acestep_parity.exporters.profiles.recipes import PROFILE_NAMES, RECIPES

__all__ = ["PROFILE_NAMES", "RECIPES"]
