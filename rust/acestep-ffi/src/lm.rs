//! The LM planner's host logic behind `ace_lm_reset`, `ace_apply_lm_constraints`, `ace_lm_update` and
//! `ace_finalize_metadata`: upstream's constrained-decoding FSM and metadata parsing, as `acestep-core`
//! implements them (`lm_fsm`, `lm_parse`, `lm_planner`), on the LM folder's tokenizer. The host runs the LM
//! graphs and chooses tokens; the library masks the logits and turns the token stream into metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use acestep_core::lm_fsm::{self, FsmError, FsmTables, LmFsm, LmVocab};
use acestep_core::lm_parse::{self, SampleResult};
use acestep_core::lm_planner;
use acestep_core::lm_tokenizer::{LmTokenizer, LmTokenizerError, GENRES_FILE, LM_DIR};
use serde_json::{json, Map, Value};

use crate::error::{AceStatus, FfiError, FfiResult};

fn fsm_error(e: FsmError) -> FfiError {
    let field = match &e {
        FsmError::VocabSize { .. } => Some("vocab_size".to_string()),
        FsmError::Token(_) => Some("token_id".to_string()),
        FsmError::MaxDuration(_) => Some("max_duration".to_string()),
        FsmError::UserField(_) => Some("vocal_language".to_string()),
        _ => None,
    };
    let code =
        if matches!(e, FsmError::VocabSize { .. }) { AceStatus::LengthMismatch } else { AceStatus::InvalidArgument };
    FfiError::new(code, field, e.to_string())
}

fn tokenizer_error(e: LmTokenizerError) -> FfiError {
    let code = match e {
        LmTokenizerError::Missing { .. } | LmTokenizerError::Io { .. } => AceStatus::Io,
        LmTokenizerError::Invalid { .. } | LmTokenizerError::NoGenres { .. } => AceStatus::InvalidArgument,
    };
    FfiError::new(code, Some("lm_dir".into()), e.to_string())
}

/// The LM assets of a context, loaded on the first LM call; FSM tables cached per `max_duration`.
pub struct LmAssets {
    pub tok: LmTokenizer,
    pub genres: Vec<String>,
    pub tables: BTreeMap<i64, Arc<FsmTables>>,
}

impl LmAssets {
    pub fn load(lm_dir: &Path, genres_path: &Path) -> FfiResult<Self> {
        let tok = LmTokenizer::load(lm_dir).map_err(tokenizer_error)?;
        let text = std::fs::read_to_string(genres_path).map_err(|e| {
            FfiError::new(AceStatus::Io, Some("genres_vocab".into()), format!("{}: {e}", genres_path.display()))
        })?;
        Ok(Self { tok, genres: lm_fsm::load_genres(&text), tables: BTreeMap::new() })
    }

    fn tables(&mut self, max_duration: i64) -> FfiResult<Arc<FsmTables>> {
        if let Some(t) = self.tables.get(&max_duration) {
            return Ok(t.clone());
        }
        let t = Arc::new(FsmTables::new(&self.tok, &self.genres, max_duration).map_err(fsm_error)?);
        self.tables.insert(max_duration, t.clone());
        Ok(t)
    }
}

/// One generation: the FSM (owning a share of its cached tables) and its options.
pub struct Generation {
    fsm: LmFsm,
    pub instrumental: bool,
    pub vocab_size: usize,
}

/// Where the LM files of a context live: `lm_dir` and `genres_vocab` from the configuration, else
/// `<onnx_dir>/acestep-5Hz-lm-0.6B/{,genres_vocab.txt}`.
pub fn lm_paths(
    onnx_dir: Option<&Path>,
    lm_dir: Option<PathBuf>,
    genres: Option<PathBuf>,
) -> FfiResult<(PathBuf, PathBuf)> {
    let dir = lm_dir
        .or_else(|| onnx_dir.map(|d| d.join(LM_DIR)))
        .ok_or_else(|| FfiError::arg("lm_dir", "the LM functions need lm_dir (or onnx_dir) in the configuration"))?;
    let genres = genres.unwrap_or_else(|| dir.join(GENRES_FILE));
    Ok((dir, genres))
}

fn opt_str(options: &Map<String, Value>, key: &str) -> FfiResult<Option<String>> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(FfiError::new(AceStatus::InvalidJson, Some(key.into()), format!("{key} must be a string, got {other}")))
        }
    }
}

/// Start a generation (`ace_lm_reset`): simple mode's FSM with the user's language injected.
pub fn begin(assets: &mut LmAssets, options: &Map<String, Value>) -> FfiResult<(Generation, Value)> {
    const KEYS: [&str; 4] = ["query", "instrumental", "vocal_language", "max_duration"];
    if let Some(k) = options.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(FfiError::arg(k, format!("unknown option {k:?} (allowed: {KEYS:?})")));
    }
    let query = opt_str(options, "query")?.unwrap_or_default();
    let instrumental = match options.get("instrumental") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(FfiError::new(
                AceStatus::InvalidJson,
                Some("instrumental".into()),
                format!("instrumental must be a bool, got {other}"),
            ))
        }
    };
    let language = opt_str(options, "vocal_language")?;
    let max_duration = match options.get("max_duration") {
        None | Some(Value::Null) => lm_planner::CPU_MAX_DURATION,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| FfiError::arg("max_duration", format!("max_duration must be an integer, got {n}")))?,
        Some(other) => {
            return Err(FfiError::new(
                AceStatus::InvalidJson,
                Some("max_duration".into()),
                format!("max_duration must be an integer, got {other}"),
            ))
        }
    };
    let tables = assets.tables(max_duration)?;
    let metadata = lm_fsm::simple_mode_user_metadata(language.as_deref());
    let vocab_size = tables.vocab_size;
    let fsm = LmFsm::new(tables, &assets.tok, &metadata).map_err(fsm_error)?;
    let prompt = lm_planner::inspiration_prompt(&query, instrumental);
    let prompt_ids = assets.tok.encode_prompt(&prompt).map_err(fsm_error)?;
    let info = json!({
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "vocab_size": vocab_size,
        "eos_token_id": assets.tok.eos_token_id(),
        "pad_token_id": assets.tok.pad_or_eos(),
        "max_new_tokens": lm_planner::max_new_tokens(),
        "max_duration": max_duration,
    });
    Ok((Generation { fsm, instrumental, vocab_size }, info))
}

impl Generation {
    /// Mask one row of logits (`-inf` where the FSM forbids a token).
    pub fn apply(&mut self, logits: &[f32]) -> FfiResult<Vec<f32>> {
        let mut row = logits.to_vec();
        self.fsm.apply(&mut row).map_err(fsm_error)?;
        Ok(row)
    }

    pub fn update(&mut self, token: u32) -> FfiResult<()> {
        if token as usize >= self.vocab_size {
            return Err(FfiError::arg(
                "token_id",
                format!("token id {token} is outside the LM vocabulary ({})", self.vocab_size),
            ));
        }
        self.fsm.update(token).map_err(fsm_error)
    }
}

/// `create_sample_from_query`'s metadata of a token stream: `{"text", "metadata", "sample"}`.
pub fn finalize(tok: &LmTokenizer, tokens: &[i64], instrumental: bool) -> FfiResult<Value> {
    Ok(finalize_sample(tok, tokens, instrumental)?.0)
}

/// [`finalize`]'s JSON and the `create_sample` result it holds (for the hand-off to text2music).
pub fn finalize_sample(tok: &LmTokenizer, tokens: &[i64], instrumental: bool) -> FfiResult<(Value, SampleResult)> {
    let ids: Vec<u32> = tokens
        .iter()
        .map(|&t| u32::try_from(t).ok().filter(|&t| (t as usize) < tok.vocab_size()))
        .collect::<Option<_>>()
        .ok_or_else(|| FfiError::arg("token_ids", format!("token ids must lie in 0..{}", tok.vocab_size())))?;
    let text = tok.decode(&ids).map_err(fsm_error)?;
    let metadata = lm_parse::create_sample_fields(&text, instrumental);
    let metadata_json = lm_parse::metadata_json(&metadata);
    let sample = lm_parse::create_sample_result(&metadata);
    let value = json!({
        "text": text,
        "metadata_json": metadata_json,
        "metadata": serde_json::from_str::<Value>(&metadata_json).unwrap_or(Value::Null),
        "sample": {
            "caption": sample.caption, "lyrics": sample.lyrics, "bpm": sample.bpm, "duration": sample.duration,
            "keyscale": sample.keyscale, "language": sample.language, "timesignature": sample.timesignature,
            "instrumental": sample.instrumental,
        },
    });
    Ok((value, sample))
}
