"""Runtime backends: ``torch_ref`` (PyTorch reference) and ``py_ort`` (minimal ONNX Runtime runtime)."""
