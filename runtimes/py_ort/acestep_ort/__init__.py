"""Minimal ACE-Step 1.5 runtime on ONNX Runtime: onnxruntime + numpy + tokenizers (+ soundfile for files).

Importing or running it never imports torch, transformers or diffusers (a test enforces it).
"""

from acestep_ort.pipeline import OrtEngine, load_engine

__all__ = ["OrtEngine", "load_engine"]
