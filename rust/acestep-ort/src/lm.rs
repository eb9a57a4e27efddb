//! The 5 Hz LM planner (simple mode) on ONNX Runtime: `lm_prefill.onnx` once on the prompt, then
//! `lm_decode.onnx` per token with the KV cache fed back (`present_*` -> `past_*`; the prefix is never
//! recomputed). Port of `runtimes/py_ort/acestep_ort/lm.py` + `runtimes/py_ort/acestep_ort/host/planner.run_planner`; the host logic
//! (prompt, FSM, processors, parsing) is `acestep-core`'s (`lm_fsm`, `lm_planner`, `lm_parse`), held to the
//! Python one by shared vectors. Greedy (parity mode) only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use acestep_core::case::Case;
use acestep_core::lm_fsm::{self, FsmTables, LmFsm, LmVocab};
use acestep_core::lm_parse::{self, SampleResult};
use acestep_core::lm_planner;
use acestep_core::lm_tokenizer::{genres_path, LmTokenizer, LM_DIR};
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use ort::value::{DynValue, Tensor as OrtTensor};
use serde_json::Value;

use crate::sessions::{Graph, SessionConfig};
use crate::tensor::{Arrays, Tensor};

pub const LM_GRAPHS: [&str; 2] = ["lm_prefill", "lm_decode"];

/// The two LM graphs and the cache between calls.
pub struct OrtLm {
    pub prefill: Graph,
    pub decode: Graph,
    pub tokenizer: LmTokenizer,
    pub dir: PathBuf,
    cache: Option<(DynValue, DynValue)>,
    tables: BTreeMap<i64, Arc<FsmTables>>,
}

fn logits_row(graph: &str, v: &DynValue) -> Result<Vec<f32>> {
    let a = v.try_extract_array::<f32>().with_context(|| format!("{graph}.onnx: logits are not float32"))?;
    if a.ndim() != 2 || a.shape()[0] != 1 {
        bail!("{graph}.onnx returned logits of shape {:?}, expected [1, V]", a.shape());
    }
    Ok(a.iter().copied().collect())
}

fn ids_value(ids: &[u32]) -> Result<DynValue> {
    let a = ArrayD::from_shape_vec(IxDyn(&[1, ids.len()]), ids.iter().map(|&i| i as i64).collect())?;
    Ok(OrtTensor::from_array(a)?.into_dyn())
}

/// One planner run (`host.planner.PlannerResult`).
pub struct PlannerResult {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<u32>,
    pub vocab: usize,
    /// `[steps * V]` raw logits before any processor.
    pub logits: Vec<f32>,
    /// `[steps * V]` finite after the FSM.
    pub allowed: Vec<bool>,
    pub margins: Vec<f64>,
    pub digests: Vec<String>,
    pub text: String,
    pub metadata_json: String,
    pub sample: SampleResult,
    pub timings: Vec<(String, f64)>,
}

impl OrtLm {
    pub fn open(
        env: &ort::environment::Environment,
        dir: &Path,
        config: &SessionConfig,
        manifest: Option<&Value>,
    ) -> Result<Self> {
        for name in LM_GRAPHS {
            let path = dir.join(format!("{name}.onnx"));
            if !path.is_file() {
                bail!(
                    "missing graph {}: the checkpoint had no {LM_DIR}/ when it was exported (simple mode needs the \
                     planner)",
                    path.display()
                );
            }
        }
        let prefill = Graph::open(env, dir, "lm_prefill", config, manifest)?;
        let decode = Graph::open(env, dir, "lm_decode", config, manifest)?;
        let tokenizer = LmTokenizer::load(&dir.join(LM_DIR))?;
        Ok(Self { prefill, decode, tokenizer, dir: dir.to_path_buf(), cache: None, tables: BTreeMap::new() })
    }

    /// `lm_start`: the prompt through `lm_prefill`; the last position's logits `[V]`.
    pub fn start(&mut self, prompt_ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = self.prefill.run(vec![("input_ids".into(), ids_value(prompt_ids)?)])?;
        if out.len() != 3 {
            bail!("lm_prefill.onnx returned {} outputs, expected logits, present_keys, present_values", out.len());
        }
        let values = out.pop().ok_or_else(|| anyhow!("lm_prefill.onnx: no present_values"))?;
        let keys = out.pop().ok_or_else(|| anyhow!("lm_prefill.onnx: no present_keys"))?;
        let logits = logits_row("lm_prefill", &out[0])?;
        self.cache = Some((keys, values));
        Ok(logits)
    }

    /// `lm_next`: one token on the cached keys/values; the next logits `[V]`.
    pub fn next(&mut self, token: u32) -> Result<Vec<f32>> {
        let (keys, values) = self.cache.take().ok_or_else(|| anyhow!("lm_next before lm_start"))?;
        let feeds = vec![
            ("input_ids".into(), ids_value(&[token])?),
            ("past_keys".into(), keys),
            ("past_values".into(), values),
        ];
        let mut out = self.decode.run(feeds)?;
        if out.len() != 3 {
            bail!("lm_decode.onnx returned {} outputs, expected logits, present_keys, present_values", out.len());
        }
        let values = out.pop().ok_or_else(|| anyhow!("lm_decode.onnx: no present_values"))?;
        let keys = out.pop().ok_or_else(|| anyhow!("lm_decode.onnx: no present_keys"))?;
        let logits = logits_row("lm_decode", &out[0])?;
        self.cache = Some((keys, values));
        Ok(logits)
    }

    /// Teacher-forced logits of every step (`host.planner.teacher_forced_logits`): `[steps * V]`.
    pub fn teacher_forced(&mut self, prompt_ids: &[u32], tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = self.start(prompt_ids)?;
        for &t in tokens.iter().take(tokens.len().saturating_sub(1)) {
            out.extend(self.next(t)?);
        }
        Ok(out)
    }

    fn tables(&mut self, max_duration: i64) -> Result<Arc<FsmTables>> {
        if let Some(tables) = self.tables.get(&max_duration) {
            return Ok(tables.clone());
        }
        let path = genres_path(&self.dir)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let genres = lm_fsm::load_genres(&text);
        let tables = Arc::new(FsmTables::new(&self.tokenizer, &genres, max_duration)?);
        self.tables.insert(max_duration, tables.clone());
        Ok(tables)
    }

    /// `run_planner` for a simple_mode case, greedy (upstream's simple-mode loop, step for step).
    pub fn plan(&mut self, case: &Case) -> Result<PlannerResult> {
        let max_duration = lm_planner::case_max_duration(case.music.duration);
        let vocal_language = (case.music.language != "unknown" && !case.music.language.is_empty())
            .then_some(case.music.language.as_str());
        let user = lm_fsm::simple_mode_user_metadata(vocal_language);
        let prompt = lm_planner::inspiration_prompt(&case.query, case.instrumental);
        let prompt_ids = self.tokenizer.encode_prompt(&prompt)?;
        let budget = lm_planner::max_new_tokens();
        let tables = self.tables(max_duration)?;
        self.run_loop(tables, &user, prompt, prompt_ids, budget, case.instrumental)
    }

    fn run_loop(
        &mut self,
        tables: Arc<FsmTables>,
        user: &BTreeMap<String, String>,
        prompt: String,
        prompt_ids: Vec<u32>,
        budget: usize,
        instrumental: bool,
    ) -> Result<PlannerResult> {
        let vocab = tables.vocab_size;
        let mut fsm = LmFsm::new(tables, &self.tokenizer, user)?;
        let (eos, pad) = (self.tokenizer.eos_token_id(), self.tokenizer.pad_or_eos());
        let (mut tokens, mut raws, mut allowed, mut margins, mut digests) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let start = Instant::now();
        let mut logits = self.start(&prompt_ids)?;
        let prefill_s = start.elapsed().as_secs_f64();
        for _ in 0..budget {
            if logits.len() != vocab {
                bail!("the LM returned {} logits, its tokenizer has {vocab} ids", logits.len());
            }
            let mut constrained = logits.clone();
            fsm.apply(&mut constrained)?;
            let mask: Vec<bool> = constrained.iter().map(|v| v.is_finite()).collect();
            digests.push(lm_planner::mask_digest(&mask));
            margins.push(lm_planner::margin(&constrained));
            allowed.extend(mask);
            // repetition penalty 1.0, no top-k / top-p in parity mode: greedy on the constrained logits
            let token = lm_fsm::argmax(&constrained) as u32;
            fsm.update(token)?;
            raws.extend_from_slice(&logits);
            tokens.push(token);
            if token == eos || token == pad {
                break;
            }
            logits = self.next(token)?;
        }
        let total = start.elapsed().as_secs_f64();
        let (text, metadata_json) = lm_planner::finalize_metadata(&self.tokenizer, &tokens, instrumental)?;
        let sample = lm_parse::create_sample_result(&lm_parse::create_sample_fields(&text, instrumental));
        let n = tokens.len() as f64;
        Ok(PlannerResult {
            prompt,
            prompt_ids,
            vocab,
            logits: raws,
            allowed,
            margins,
            digests,
            metadata_json,
            sample,
            text,
            tokens,
            timings: vec![
                ("lm_prefill".into(), prefill_s),
                ("lm_decode".into(), total - prefill_s),
                ("lm_tokens".into(), n),
            ],
        })
    }
}

impl PlannerResult {
    /// The LM capture points (`host.planner.captures`), same names, dtypes and shapes.
    pub fn captures(&self, arrays: &mut Arrays) -> Result<()> {
        let steps = self.tokens.len();
        let v = self.vocab;
        let k = lm_planner::TOPK_STORED.min(v);
        let (mut top_ids, mut top_vals) = (Vec::with_capacity(steps * k), Vec::with_capacity(steps * k));
        for row in self.logits.chunks(v) {
            for id in lm_planner::topk_ids(row, k) {
                top_ids.push(id as i64);
                top_vals.push(row[id]);
            }
        }
        let ids64 = |ids: &[u32]| ids.iter().map(|&i| i as i64).collect::<Vec<_>>();
        arrays.insert("lm_prompt_ids", Tensor::i64(&[self.prompt_ids.len()], ids64(&self.prompt_ids))?);
        arrays.insert("lm_tokens", Tensor::i64(&[steps], ids64(&self.tokens))?);
        arrays.insert("lm_logits", Tensor::f32(&[steps, v], self.logits.clone())?);
        arrays.insert("lm_topk_ids", Tensor::i64(&[steps, k], top_ids)?);
        arrays.insert("lm_topk_logits", Tensor::f32(&[steps, k], top_vals)?);
        arrays.insert("lm_allowed", Tensor::bool(&[steps, v], self.allowed.clone())?);
        arrays.insert("lm_mask_digests", Tensor::Str(vec![steps], self.digests.clone()));
        arrays.insert("lm_margins", Tensor::f64(&[steps], self.margins.clone())?);
        arrays.insert("lm_text", Tensor::Str(vec![], vec![self.text.clone()]));
        arrays.insert("lm_metadata", Tensor::Str(vec![], vec![self.metadata_json.clone()]));
        Ok(())
    }
}
