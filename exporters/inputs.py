"""Deterministic input generators for a :class:`~acestep_parity.exporters.specs.GraphSpec` (export dummies and test grids).

Values follow each tensor's ``kind`` so that the graphs are exercised the way the host drives them: token ids in
the vocabulary, right-padded 0/1 masks, timesteps in [0, 1], the checkpoint's own silence latent for the timbre
reference and the context latents. numpy only (no torch), so the ORT backend's tests can reuse it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from acestep_ort.host import latents as host_latents
from acestep_parity.exporters.specs import GraphSpec


def make_inputs(
    spec: GraphSpec,
    sizes: Mapping[str, int],
    dims: Mapping[str, int],
    *,
    seed: int = 0,
    silence_latent: np.ndarray | None = None,
    lengths: Mapping[str, Sequence[int]] | None = None,
    timesteps: Sequence[float] | None = None,
    timestep_r: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs of ``spec`` at concrete ``sizes`` (dynamic axes) and ``dims`` (config dims).

    ``lengths`` maps a mask input name to the valid length of each batch item (default: all valid, i.e. an
    unpadded batch). ``timesteps`` / ``timestep_r`` give per-item timestep values (default: uniform draws;
    ``timestep_r`` defaults to ``timestep``, as the text2music host passes r = t).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        shape = tensor.concrete_shape(sizes, dims)
        if tensor.kind == "ids":
            out[tensor.name] = rng.integers(0, dims["V_text"], size=shape, dtype=np.int64)
        elif tensor.kind == "lm_ids":
            out[tensor.name] = rng.integers(0, dims["V_lm"], size=shape, dtype=np.int64)
        elif tensor.kind == "mask":
            mask = np.zeros(shape, dtype=np.int64)
            valid = (lengths or {}).get(tensor.name) or [shape[1]] * shape[0]
            if len(valid) != shape[0] or any(not 0 < v <= shape[1] for v in valid):
                raise ValueError(f"{tensor.name}: lengths {list(valid)} do not fit shape {shape}")
            for b, n in enumerate(valid):
                mask[b, :n] = 1
            out[tensor.name] = mask
        elif tensor.kind == "timestep":
            if tensor.name == "timestep_r":
                values = timestep_r if timestep_r is not None else out.get("timestep")
            else:
                values = timesteps
            if values is None:
                values = rng.uniform(0.0, 1.0, size=shape)
            out[tensor.name] = np.asarray(values, dtype=np.float32).reshape(shape)
        elif tensor.kind == "timbre":
            if silence_latent is None:
                out[tensor.name] = rng.standard_normal(shape).astype(np.float32)
            else:
                ref, _ = host_latents.timbre_reference(silence_latent, shape[0])
                out[tensor.name] = ref
        elif tensor.kind == "context":
            if silence_latent is None:
                src = rng.standard_normal((*shape[:2], shape[2] // 2)).astype(np.float32)
                out[tensor.name] = np.concatenate([src, np.ones_like(src)], axis=-1)
            else:
                out[tensor.name] = host_latents.context_latents(silence_latent, shape[1], shape[0])
        else:  # hidden / latent activations
            out[tensor.name] = rng.standard_normal(shape).astype(np.float32)
        if out[tensor.name].dtype != np.dtype(tensor.dtype):
            raise TypeError(f"{spec.name}.{tensor.name}: generated {out[tensor.name].dtype}, spec {tensor.dtype}")
    return out
