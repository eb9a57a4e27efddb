//! The tokenizer view the 5 Hz LM host logic needs, and upstream's LM folder constants: the Rust twin of
//! `runtimes/py_ort/acestep_ort/host/lm_tokenizer.py` (`FastTokenizer`). [`LmTokenizer`] is the [`LmVocab`] of the
//! FSM for both the Rust runtime (`acestep-ort`) and the C-ABI library (`acestep-ffi`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;
use tokenizers::Tokenizer;

use crate::assets;
use crate::lm_fsm::{FsmError, LmVocab};

/// The planner folder in a checkpoint and in an ONNX folder.
pub const LM_DIR: &str = "acestep-5Hz-lm-0.6B";
/// The genres list the FSM constrains `genres:` with, in [`LM_DIR`].
pub const GENRES_FILE: &str = "genres_vocab.txt";
/// Overrides the genres list (upstream's `acestep/genres_vocab.txt` for a real checkpoint).
pub const GENRES_ENV: &str = "ACESTEP_GENRES_VOCAB";

#[derive(Debug, Error)]
pub enum LmTokenizerError {
    #[error("{} lacks the LM tokenizer ({}); re-export with `acestep-export`", folder.display(), path.display())]
    Missing { folder: PathBuf, path: PathBuf },
    /// The file could not be read.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The file was read and is not a tokenizer (configuration).
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "genres vocabulary {} not found: set {GENRES_ENV} to upstream's acestep/genres_vocab.txt (see \
         docs/lm_planner.md)",
        path.display()
    )]
    NoGenres { path: PathBuf },
}

/// The LM tokenizer (`tokenizer.json` + `tokenizer_config.json` of the LM folder).
pub struct LmTokenizer {
    tokenizer: Tokenizer,
    eos: u32,
    pad: Option<u32>,
    size: usize,
}

impl LmTokenizer {
    pub fn load(folder: &Path) -> Result<Self, LmTokenizerError> {
        let (json_path, config_path) = assets::tokenizer_paths(folder);
        if !json_path.is_file() {
            return Err(LmTokenizerError::Missing { folder: folder.to_path_buf(), path: json_path });
        }
        let tokenizer = Tokenizer::from_file(&json_path)
            .map_err(|e| LmTokenizerError::Invalid { path: json_path.clone(), message: e.to_string() })?;
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| LmTokenizerError::Io { path: config_path.clone(), message: e.to_string() })?;
        let invalid = |message: String| LmTokenizerError::Invalid { path: config_path.clone(), message };
        let config: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let token_id = |key: &str| -> Result<Option<u32>, LmTokenizerError> {
            let content = match config.get(key) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
                Some(other) => return Err(invalid(format!("{key} is {other}"))),
            };
            tokenizer
                .token_to_id(&content)
                .map(Some)
                .ok_or_else(|| invalid(format!("token {content:?} is not in tokenizer.json")))
        };
        let eos = token_id("eos_token")?.ok_or_else(|| invalid("no eos_token".into()))?;
        let pad = token_id("pad_token")?;
        let size = tokenizer.get_vocab_size(true);
        Ok(Self { tokenizer, eos, pad, size })
    }

    /// `tokenizer(prompt)` (special tokens on: the Qwen3 LM post-processor appends nothing).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, FsmError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| FsmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id that ends a generation besides eos (`pad_token_id`, else eos).
    pub fn pad_or_eos(&self) -> u32 {
        self.pad.unwrap_or(self.eos)
    }
}

impl LmVocab for LmTokenizer {
    fn vocab_size(&self) -> usize {
        self.size
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, FsmError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| FsmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, FsmError> {
        self.tokenizer.decode(ids, false).map_err(|e| FsmError::Tokenizer(e.to_string()))
    }
    fn eos_token_id(&self) -> u32 {
        self.eos
    }
    fn pad_token_id(&self) -> Option<u32> {
        self.pad
    }
}

/// The genres list of an ONNX folder: `$ACESTEP_GENRES_VOCAB`, else `<onnx_dir>/acestep-5Hz-lm-0.6B/genres_vocab.txt`
/// (`lm_tokenizer.genres_path`).
pub fn genres_path(onnx_dir: &Path) -> Result<PathBuf, LmTokenizerError> {
    let path = match std::env::var_os(GENRES_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => onnx_dir.join(LM_DIR).join(GENRES_FILE),
    };
    if !path.is_file() {
        return Err(LmTokenizerError::NoGenres { path });
    }
    Ok(path)
}
