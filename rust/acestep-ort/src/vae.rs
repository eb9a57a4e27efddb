//! The VAE decode chunk of an ONNX folder: its decoder's widths from `manifest.json` (`vae_shape`) and the
//! chunking asked for (`ACESTEP_VAE_TILING`, `ACESTEP_VAE_MEMORY_MB`), as `OrtEngine.vae_chunk` in py_ort.

use acestep_core::tiling::{VaeChunking, VaeShape, VAE_MAX_FRAMES};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// The decoder's widths recorded by the exporter; the real 128-channel decoder when the manifest predates them.
pub fn vae_shape(manifest: Option<&Value>) -> Result<VaeShape> {
    let Some(shape) = manifest.and_then(|m| m.get("vae_shape")) else {
        return Ok(VaeShape::default());
    };
    let int = |v: &Value| v.as_u64().map(|x| x as usize).ok_or_else(|| anyhow!("not a whole number: {v}"));
    let list = |key: &str| -> Result<Vec<usize>> {
        shape[key].as_array().ok_or_else(|| anyhow!("missing list {key}"))?.iter().map(int).collect()
    };
    let parsed = (|| -> Result<VaeShape> {
        Ok(VaeShape {
            decoder_channels: int(&shape["decoder_channels"])?,
            channel_multiples: list("channel_multiples")?,
            downsampling_ratios: list("downsampling_ratios")?,
        })
    })();
    parsed.context("manifest.json: invalid vae_shape")
}

/// Latent frames per `vae_decoder.onnx` call for this folder and chunking.
pub fn chunk_frames(manifest: Option<&Value>, chunking: &VaeChunking) -> Result<usize> {
    Ok(chunking.chunk_size(&vae_shape(manifest)?, VAE_MAX_FRAMES)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_manifest_shape() {
        let m = serde_json::json!({"vae_shape": {"decoder_channels": 8, "channel_multiples": [1, 2, 4, 8, 16],
                                                   "downsampling_ratios": [2, 4, 4, 6, 10]}});
        assert_eq!(vae_shape(Some(&m)).expect("shape").decoder_channels, 8);
        assert_eq!(vae_shape(None).expect("shape"), VaeShape::default());
        assert!(vae_shape(Some(&serde_json::json!({"vae_shape": {"decoder_channels": "x"}}))).is_err());
        let up = chunk_frames(Some(&m), &VaeChunking::Upstream).expect("chunk");
        assert_eq!(up, 256);
    }
}
