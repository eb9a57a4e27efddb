//! A context: what `ace_create_context` loads once (tokenizer, pad id, silence latent) and every later call
//! reads. Contexts share nothing; the tokenizer sits behind a mutex so one context may serve many threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use acestep_core::assets::{self, AssetError};
use acestep_core::digests;
use acestep_core::latents::SilenceLatent;
use acestep_core::tokenizer::TextTokenizer;
use serde_json::{Map, Value};

use crate::error::{AceStatus, FfiError, FfiResult};

/// Configuration keys `ace_create_context` accepts.
pub const CONFIG_KEYS: [&str; 7] =
    ["abi_version", "onnx_dir", "tokenizer_json", "tokenizer_config", "silence_latent", "lm_dir", "genres_vocab"];

/// The opaque context behind `AceContext *`.
pub struct AceContext {
    pub tokenizer: Mutex<TextTokenizer>,
    pub pad_id: i64,
    pub silence: SilenceLatent,
    pub onnx_dir: Option<PathBuf>,
    /// The LM folder and genres list (`lm_dir`, `genres_vocab`); read on the first LM call.
    pub lm_paths: Option<(PathBuf, PathBuf)>,
    /// The LM assets and the generation in progress: one generation at a time per context.
    pub lm: Mutex<LmState>,
}

/// The LM side of a context.
#[derive(Default)]
pub struct LmState {
    pub assets: Option<crate::lm::LmAssets>,
    pub generation: Option<crate::lm::Generation>,
}

/// An asset that cannot be read is `Io`; one that was read and is wrong is `invalid`.
fn asset_error(field: &str, invalid: AceStatus, e: AssetError) -> FfiError {
    let status = match e {
        AssetError::Missing { .. } | AssetError::Io { .. } => AceStatus::Io,
        AssetError::Invalid { .. } => invalid,
    };
    FfiError::new(status, Some(field.into()), e.to_string())
}

fn path_field(config: &Map<String, Value>, key: &str) -> FfiResult<Option<PathBuf>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
        Some(other) => Err(FfiError::new(
            AceStatus::InvalidJson,
            Some(key.into()),
            format!("{key} must be a non-empty path string, got {other}"),
        )),
    }
}

impl AceContext {
    /// Build a context from the parsed configuration object.
    pub fn from_config(config: &Map<String, Value>) -> FfiResult<Self> {
        for key in config.keys() {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                return Err(FfiError::arg(
                    key,
                    format!("unknown configuration key {key:?} (allowed: {CONFIG_KEYS:?})"),
                ));
            }
        }
        if let Some(v) = config.get("abi_version") {
            if v.as_u64() != Some(u64::from(crate::ACE_ABI_VERSION)) {
                return Err(FfiError::arg(
                    "abi_version",
                    format!("this library implements ABI {}, the configuration asks for {v}", crate::ACE_ABI_VERSION),
                ));
            }
        }
        let onnx_dir = path_field(config, "onnx_dir")?;
        if let Some(dir) = &onnx_dir {
            if !dir.is_dir() {
                return Err(FfiError::new(
                    AceStatus::Io,
                    Some("onnx_dir".into()),
                    format!("ONNX folder {} does not exist", dir.display()),
                ));
            }
        }
        let from_dir = |name: &str| onnx_dir.as_ref().map(|d| d.join(name));
        let need = |key: &str, name: &str| -> FfiResult<PathBuf> {
            path_field(config, key)?
                .or_else(|| from_dir(name))
                .ok_or_else(|| FfiError::arg(key, format!("the configuration needs onnx_dir or {key}")))
        };
        let tokenizer_json = need("tokenizer_json", "tokenizer.json")?;
        let tokenizer_config = path_field(config, "tokenizer_config")?.or_else(|| from_dir("tokenizer_config.json"));
        let silence_path = need("silence_latent", "silence_latent.npy")?;
        let folder_manifest = match &onnx_dir {
            Some(dir) => assets::read_manifest(dir).map_err(|e| asset_error("onnx_dir", AceStatus::InvalidJson, e))?,
            None => None,
        };
        if let (Some(dir), Some(manifest)) = (&onnx_dir, &folder_manifest) {
            // the host runs these graphs itself: every file the manifest lists is checked before it does
            digests::verify_folder(dir, manifest, None).map_err(|e| {
                let status = match e {
                    digests::DigestError::Missing { .. } | digests::DigestError::Io { .. } => AceStatus::Io,
                    _ => AceStatus::InvalidArgument,
                };
                FfiError::new(status, Some("onnx_dir".into()), e.to_string())
            })?;
        }
        let manifest = if config.get("silence_latent").is_none() { folder_manifest } else { None };
        let tokenizer = load_tokenizer(&tokenizer_json, tokenizer_config.as_deref())?;
        let silence = assets::load_silence_latent(&silence_path, manifest.as_ref())
            .map_err(|e| asset_error("silence_latent", AceStatus::InvalidArgument, e))?;
        let lm_paths = crate::lm::lm_paths(
            onnx_dir.as_deref(),
            path_field(config, "lm_dir")?,
            path_field(config, "genres_vocab")?,
        )
        .ok();
        Ok(Self {
            pad_id: tokenizer.pad_id,
            tokenizer: Mutex::new(tokenizer),
            silence,
            onnx_dir,
            lm_paths,
            lm: Mutex::new(LmState::default()),
        })
    }

    /// Token ids of `text`, truncated to `max_length` (special tokens added by the post-processor).
    pub fn tokenize(&self, text: &str, max_length: usize) -> FfiResult<Vec<i64>> {
        // A poisoned lock only means another thread panicked mid-call; the tokenizer holds no partial state.
        let mut tok = self.tokenizer.lock().unwrap_or_else(|p| p.into_inner());
        tok.encode(text, max_length).map_err(|e| FfiError::new(AceStatus::InvalidArgument, None, e.to_string()))
    }
}

impl AceContext {
    /// The LM state, its assets loaded (on the first call).
    pub fn lm(&self) -> FfiResult<std::sync::MutexGuard<'_, LmState>> {
        let mut state = self.lm.lock().unwrap_or_else(|p| p.into_inner());
        if state.assets.is_none() {
            let (dir, genres) = self.lm_paths.as_ref().ok_or_else(|| {
                FfiError::arg("lm_dir", "the LM functions need lm_dir (or onnx_dir) in the configuration")
            })?;
            state.assets = Some(crate::lm::LmAssets::load(dir, genres)?);
        }
        Ok(state)
    }
}

fn load_tokenizer(json: &Path, config: Option<&Path>) -> FfiResult<TextTokenizer> {
    if !json.is_file() {
        return Err(FfiError::new(
            AceStatus::Io,
            Some("tokenizer_json".into()),
            format!("tokenizer file {} does not exist", json.display()),
        ));
    }
    TextTokenizer::load(json, config).map_err(|e| FfiError::arg("tokenizer_json", e.to_string()))
}
