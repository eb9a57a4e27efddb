//! Tokenization (shared by `acestep-ort` and the C-ABI library `acestep-ffi`) with the folder's `tokenizer.json` through the `tokenizers` crate — the same Rust code
//! (0.22) that Python's `tokenizers` wheel runs. Port of `runtimes/py_ort/acestep_ort/host/tokenizer.py`: no padding,
//! right truncation to `max_length` (the post-processor's `<|endoftext|>` is kept), pad id from
//! `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;
use tokenizers::{Tokenizer, TruncationParams};

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer file {0} does not exist")]
    Missing(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub struct TextTokenizer {
    pub path: PathBuf,
    tokenizer: Tokenizer,
    pub pad_id: i64,
}

impl TextTokenizer {
    pub fn load(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self, TokenizerError> {
        if !tokenizer_json.is_file() {
            return Err(TokenizerError::Missing(tokenizer_json.to_path_buf()));
        }
        let invalid = |path: &Path, message: String| TokenizerError::Invalid { path: path.to_path_buf(), message };
        let mut tokenizer = Tokenizer::from_file(tokenizer_json).map_err(|e| invalid(tokenizer_json, e.to_string()))?;
        tokenizer.with_padding(None);
        let config_path = tokenizer_config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| tokenizer_json.with_file_name("tokenizer_config.json"));
        let mut pad_token = "<|endoftext|>".to_string();
        if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).map_err(|e| invalid(&config_path, e.to_string()))?;
            let config: Value = serde_json::from_str(&text).map_err(|e| invalid(&config_path, e.to_string()))?;
            match config.get("pad_token") {
                Some(Value::String(s)) if !s.is_empty() => pad_token = s.clone(),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(s)) = o.get("content") {
                        pad_token = s.clone();
                    }
                }
                _ => {}
            }
        }
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .ok_or_else(|| invalid(tokenizer_json, format!("pad token {pad_token:?} is not in the vocabulary")))?;
        Ok(Self { path: tokenizer_json.to_path_buf(), tokenizer, pad_id: pad_id as i64 })
    }

    /// Token ids of `text` (special tokens added by the post-processor), truncated to `max_length`.
    pub fn encode(&mut self, text: &str, max_length: usize) -> Result<Vec<i64>, TokenizerError> {
        let invalid = |message: String| TokenizerError::Invalid { path: self.path.clone(), message };
        self.tokenizer
            .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| invalid(e.to_string()))?;
        let encoding = self.tokenizer.encode(text, true).map_err(|e| invalid(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }
}
