"""ONNX export of the ACE-Step 1.5 text2music graphs (text encoder, lyric embedding, condition encoder, DiT
decoder, VAE decoder), driven by one declarative spec per graph in :mod:`acestep_parity.exporters.specs`.

Importing this package is cheap and torch-free: :mod:`acestep_parity.exporters.specs` (the contract) needs only the standard
library; :mod:`acestep_parity.exporters.export` imports torch when a graph is traced.
"""

from acestep_parity.exporters.specs import GRAPH_SPECS, GRAPHS, OPSET, GraphSpec, TensorSpec

__all__ = ["GRAPHS", "GRAPH_SPECS", "OPSET", "GraphSpec", "TensorSpec"]
