//! The host assets of an ONNX folder: `manifest.json`, `silence_latent.npy` (a float32 `[1, C, frames]` array,
//! checked against the manifest's SHA-256 when it lists one) and the tokenizer files. The Rust twin of
//! `runtimes/py_ort/acestep_ort/host/assets.py` (which writes them); Python-free: the `.pt` copy is for the Python
//! runtime only. A minimal `.npy` reader: the core carries no array crate.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::latents::SilenceLatent;

pub const MANIFEST: &str = "manifest.json";
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SILENCE_LATENT: &str = "silence_latent.npy";
/// The assets a full run needs beside the graphs.
pub const REQUIRED: [&str; 3] = [TOKENIZER_JSON, TOKENIZER_CONFIG, SILENCE_LATENT];

#[derive(Debug, Error)]
pub enum AssetError {
    #[error(
        "missing asset {}: this ONNX folder was exported before the exporter wrote it; re-export with \
         `acestep-export --out {}` (or `make run`)",
        path.display(),
        dir.display()
    )]
    Missing { path: PathBuf, dir: PathBuf },
    /// The file could not be read.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The file was read and is not what it must be.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl AssetError {
    pub fn path(&self) -> &Path {
        match self {
            AssetError::Missing { path, .. } | AssetError::Io { path, .. } | AssetError::Invalid { path, .. } => path,
        }
    }
}

/// What a folder that is not an exported one probably is, as the end of an error message (port of
/// `onnx_folder_hint` in `host/assets.py`): a checkpoint to export first, or the exported folder below it
/// (`fp32/`, `<id>/fp32`, `artifacts/<id>/fp32`, `.cache/artifacts/<id>/fp32`, newest first); "" otherwise.
pub fn onnx_folder_hint(dir: &Path) -> String {
    if dir.join("acestep-v15-turbo").join("config.json").is_file() {
        return format!(
            "; {} is a checkpoint folder, not an exported one: export it first with `acestep-export \
             --checkpoint-dir {} --out DIR`",
            dir.display(),
            dir.display()
        );
    }
    let children = |d: &Path| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> =
            std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        out.sort();
        out
    };
    let newest = |bases: Vec<PathBuf>| -> Option<PathBuf> {
        bases
            .into_iter()
            .map(|b| b.join("fp32"))
            .filter(|f| f.join("manifest.json").is_file())
            .max_by_key(|f| std::fs::metadata(f.join("manifest.json")).and_then(|m| m.modified()).ok())
    };
    let found = newest(vec![dir.to_path_buf()])
        .or_else(|| newest(children(dir)))
        .or_else(|| newest(children(&dir.join("artifacts"))))
        .or_else(|| newest(children(&dir.join(".cache").join("artifacts"))));
    found.map(|f| format!("; the exported folder is probably {}", f.display())).unwrap_or_default()
}

/// The assets of [`REQUIRED`] that `dir` lacks.
pub fn missing(dir: &Path) -> Vec<String> {
    REQUIRED.iter().filter(|n| !dir.join(n).is_file()).map(|n| n.to_string()).collect()
}

/// `tokenizer.json` and `tokenizer_config.json` of a folder (an ONNX folder, or its LM folder).
pub fn tokenizer_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(TOKENIZER_JSON), dir.join(TOKENIZER_CONFIG))
}

/// `manifest.json` of an ONNX folder, when present.
pub fn read_manifest(dir: &Path) -> Result<Option<Value>, AssetError> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| AssetError::Io { path: path.clone(), message: e.to_string() })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| AssetError::Invalid { path, message: format!("invalid JSON: {e}") })
}

/// Parse a little-endian float32, C-order `.npy` file (format 1.0 to 3.0).
pub fn parse_npy_f32(raw: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if raw.len() < 10 || &raw[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, start): (usize, usize) = match raw[6] {
        1 => (u16::from_le_bytes([raw[8], raw[9]]) as usize, 10),
        2 | 3 if raw.len() >= 12 => (u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= raw.len()).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&raw[start..end]).map_err(|_| "the .npy header is not text")?;
    let squeezed: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !squeezed.contains("'descr':'<f4'") {
        return Err(format!("dtype must be little-endian float32 ('<f4'), header {header:?}"));
    }
    if !squeezed.contains("'fortran_order':False") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = squeezed
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("no shape in header {header:?}"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape_text:?}")))
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let body = &raw[end..];
    if body.len() != count * 4 {
        return Err(format!("{} data bytes for shape {shape:?}, expected {}", body.len(), count * 4));
    }
    let data = body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((shape, data))
}

/// A `silence_latent.npy` file, verified against `manifest["assets"]["silence_latent.npy"]["sha256"]` when given.
pub fn load_silence_latent(path: &Path, manifest: Option<&Value>) -> Result<SilenceLatent, AssetError> {
    let raw = std::fs::read(path).map_err(|e| AssetError::Io { path: path.to_path_buf(), message: e.to_string() })?;
    let invalid = |message: String| AssetError::Invalid { path: path.to_path_buf(), message };
    if let Some(want) = manifest.and_then(|m| m["assets"][SILENCE_LATENT]["sha256"].as_str()) {
        let got: String = Sha256::digest(&raw).iter().map(|b| format!("{b:02x}")).collect();
        if got != want {
            return Err(invalid(format!(
                "SHA-256 {got} does not match manifest.json assets.silence_latent.npy.sha256 {want}"
            )));
        }
    }
    let (shape, data) = parse_npy_f32(&raw).map_err(invalid)?;
    if shape.len() != 3 || shape[0] != 1 || shape[1] == 0 || shape[2] == 0 {
        return Err(invalid(format!("shape {shape:?}, expected [1, channels, frames]")));
    }
    Ok(SilenceLatent { channels: shape[1], frames: shape[2], data })
}

/// `<dir>/silence_latent.npy` of an ONNX folder ([`AssetError::Missing`] names the re-export that writes it).
pub fn load_folder_silence_latent(dir: &Path, manifest: Option<&Value>) -> Result<SilenceLatent, AssetError> {
    let path = dir.join(SILENCE_LATENT);
    if !path.is_file() {
        return Err(AssetError::Missing { path, dir: dir.to_path_buf() });
    }
    load_silence_latent(&path, manifest)
}

/// An `.npy` (v1.0) file of `header` (numpy's header dict, padded here) and `data` as little-endian float32:
/// the inverse of [`parse_npy_f32`], for test fixtures (this crate's tests and `acestep-ffi`'s testkit).
pub fn npy_bytes(header: &str, data: &[f32]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    data.iter().for_each(|x| out.extend(x.to_le_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::npy_bytes as npy;

    #[test]
    fn reads_float32_c_order() {
        let raw = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", &[0., 1., 2., 3., 4., 5.]);
        let (shape, data) = parse_npy_f32(&raw).expect("parse");
        assert_eq!(shape, vec![1, 2, 3]);
        assert_eq!(data[5], 5.0);
    }

    #[test]
    fn rejects_other_dtypes_and_truncation() {
        let raw = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &[0., 0.]);
        assert!(parse_npy_f32(&raw).is_err());
        let raw = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &[0., 0.]);
        assert!(parse_npy_f32(&raw).is_err());
        assert!(parse_npy_f32(b"\x93NUMPY").is_err());
        assert!(parse_npy_f32(b"\x93NUMPY\x01\x00\xff\xff").is_err());
    }
}
