//! The host assets of an ONNX folder: `silence_latent.npy` (checked against the manifest's SHA-256 when the
//! manifest lists it), the tokenizer files. Python-free: the `.pt` copy is for the Python runtime only.

use std::path::{Path, PathBuf};

use acestep_core::latents::SilenceLatent;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AssetError {
    #[error(
        "missing asset {path}: this ONNX folder was exported before the exporter wrote it; re-export with \
         `acestep-export --out {dir}` (or `make run`)"
    )]
    Missing { path: PathBuf, dir: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub const REQUIRED: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "silence_latent.npy"];

/// The assets of [`REQUIRED`] that `dir` lacks.
pub fn missing(dir: &Path) -> Vec<String> {
    REQUIRED.iter().filter(|n| !dir.join(n).is_file()).map(|n| n.to_string()).collect()
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `silence_latent.npy` ([1, C, frames] float32), verified against `manifest["assets"]` when listed.
pub fn load_silence_latent(dir: &Path, manifest: Option<&Value>) -> Result<SilenceLatent, AssetError> {
    let path = dir.join("silence_latent.npy");
    if !path.is_file() {
        return Err(AssetError::Missing { path, dir: dir.to_path_buf() });
    }
    let invalid = |message: String| AssetError::Invalid { path: path.clone(), message };
    if let Some(want) = manifest.and_then(|m| m["assets"]["silence_latent.npy"]["sha256"].as_str()) {
        let got = sha256_file(&path).map_err(|e| invalid(e.to_string()))?;
        if got != want {
            return Err(invalid(format!(
                "SHA-256 {got} does not match manifest.json assets.silence_latent.npy.sha256 {want}"
            )));
        }
    }
    let file = std::fs::File::open(&path).map_err(|e| invalid(e.to_string()))?;
    let array: ArrayD<f32> =
        ArrayD::<f32>::read_npy(file).map_err(|e| invalid(format!("not a float32 .npy array: {e}")))?;
    let shape = array.shape().to_vec();
    if shape.len() != 3 || shape[0] != 1 || shape[1] == 0 || shape[2] == 0 {
        return Err(invalid(format!("shape {shape:?}, expected [1, channels, frames]")));
    }
    let data = array.into_dimensionality::<IxDyn>().map_err(|e| invalid(e.to_string()))?;
    let data: Vec<f32> = data.as_standard_layout().iter().copied().collect();
    Ok(SilenceLatent { channels: shape[1], frames: shape[2], data })
}
