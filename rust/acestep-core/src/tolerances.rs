//! The one tolerance file (`cases/tolerances.json`): port of `acestep_parity/tolerances.py` — the same
//! validation, the same lookup (profile `"*"` then the profile, per-case overrides metric by metric).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// `"max"`: the value must be <= its gate; `"min"`: >= its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Max,
    Min,
}

/// The direction of a metric (`acestep_parity.metrics.METRIC_DIRECTION` plus `mismatches`).
pub fn metric_direction(metric: &str) -> Result<Direction, ToleranceError> {
    match metric {
        "max_abs" | "mean_abs" | "rmse" | "lsd_db" | "mrstft" | "mismatches" => Ok(Direction::Max),
        "cosine" | "pearson" | "snr_db" | "si_sdr_db" => Ok(Direction::Min),
        other => Err(ToleranceError(format!("unknown metric '{other}'"))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToleranceError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub metric: String,
    pub value: f64,
    pub direction: Direction,
    /// "default" or "override"
    pub source: &'static str,
    pub reason: String,
}

impl Gate {
    pub fn passes(&self, measured: f64) -> bool {
        if measured.is_nan() {
            return false;
        }
        match self.direction {
            Direction::Max => measured <= self.value,
            Direction::Min => measured >= self.value,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tolerances {
    pub path: PathBuf,
    defaults: Map<String, Value>,
    overrides: Vec<Map<String, Value>>,
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Number(_))
}

impl Tolerances {
    pub fn load(path: &Path) -> Result<Self, ToleranceError> {
        let p = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ToleranceError(format!("tolerance file {p} does not exist"))
            } else {
                ToleranceError(format!("{p}: cannot read: {e}"))
            }
        })?;
        let data: Value = serde_json::from_str(&text).map_err(|e| ToleranceError(format!("{p}: invalid JSON: {e}")))?;
        if data.get("schema").and_then(Value::as_i64) != Some(1) {
            return Err(ToleranceError(format!("{p}: 'schema' must be 1")));
        }
        let Some(Value::Object(defaults)) = data.get("defaults") else {
            return Err(ToleranceError(format!("{p}: 'defaults' must be an object")));
        };
        for (pair, profiles) in defaults {
            for (profile, tensors) in profiles.as_object().into_iter().flatten() {
                for (tensor, metrics) in tensors.as_object().into_iter().flatten() {
                    for (metric, gate) in metrics.as_object().into_iter().flatten() {
                        let at = format!("{p}: defaults.{pair}.{profile}.{tensor}.{metric}");
                        metric_direction(metric).map_err(|e| ToleranceError(format!("{at}: {e}")))?;
                        if !is_number(gate) {
                            return Err(ToleranceError(format!("{at}: gate must be a number")));
                        }
                    }
                }
            }
        }
        let mut overrides = Vec::new();
        let list = match data.get("overrides") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(ToleranceError(format!("{p}: 'overrides' must be a list"))),
        };
        for (i, ov) in list.iter().enumerate() {
            let at = format!("{p}: overrides[{i}]");
            let Value::Object(ov) = ov else {
                return Err(ToleranceError(format!("{at}: must be an object")));
            };
            let missing: Vec<String> = ["case", "pair", "profile", "tensor", "metric", "gate"]
                .iter()
                .filter(|k| !ov.contains_key(**k))
                .map(|k| format!("'{k}'"))
                .collect();
            if !missing.is_empty() {
                return Err(ToleranceError(format!("{at}: missing [{}]", missing.join(", "))));
            }
            let reason = ov.get("reason").and_then(Value::as_str).unwrap_or("");
            if crate::pyfmt::py_strip(reason).is_empty() {
                let case = ov.get("case").and_then(Value::as_str).unwrap_or("");
                return Err(ToleranceError(format!("{at} (case {case}): an override must carry a non-empty 'reason'")));
            }
            metric_direction(ov.get("metric").and_then(Value::as_str).unwrap_or(""))?;
            if !is_number(&ov["gate"]) {
                return Err(ToleranceError(format!("{at}: gate must be a number")));
            }
            overrides.push(ov.clone());
        }
        Ok(Self { path: path.to_path_buf(), defaults: defaults.clone(), overrides })
    }

    fn tensor_metrics(&self, pair: &str, profile: &str, tensor: &str) -> Option<&Map<String, Value>> {
        self.defaults.get(pair)?.get(profile)?.get(tensor)?.as_object()
    }

    /// The gates of one comparison; per-case overrides replace the defaults metric by metric.
    pub fn gates(
        &self,
        pair: &str,
        profile: &str,
        tensor: &str,
        case_id: Option<&str>,
    ) -> Result<BTreeMap<String, Gate>, ToleranceError> {
        let p = self.path.display();
        if !self.defaults.contains_key(pair) {
            return Err(ToleranceError(format!("{p}: no gates for pair '{pair}'")));
        }
        let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
        for prof in ["*", profile] {
            for (m, v) in self.tensor_metrics(pair, prof, tensor).into_iter().flatten() {
                metrics.insert(m.clone(), v.as_f64().unwrap_or(f64::NAN));
            }
        }
        if metrics.is_empty() {
            return Err(ToleranceError(format!("{p}: no gates for {pair} / {profile} / {tensor}")));
        }
        let mut out = BTreeMap::new();
        for (m, v) in metrics {
            let direction = metric_direction(&m)?;
            out.insert(m.clone(), Gate { metric: m, value: v, direction, source: "default", reason: String::new() });
        }
        for ov in &self.overrides {
            let field = |k: &str| ov.get(k).and_then(Value::as_str).unwrap_or("");
            // a scoped override (Python's `scopes`, e.g. full_depth) applies only where a caller names its
            // scope; no Rust caller does, so it never matches here. Case "*" is every case.
            if ov.get("scope").is_none()
                && (Some(field("case")) == case_id || field("case") == "*")
                && field("pair") == pair
                && (field("profile") == profile || field("profile") == "*")
                && field("tensor") == tensor
            {
                let m = field("metric").to_string();
                let gate = Gate {
                    value: ov.get("gate").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    direction: metric_direction(&m)?,
                    source: "override",
                    reason: field("reason").to_string(),
                    metric: m.clone(),
                };
                out.insert(m, gate);
            }
        }
        Ok(out)
    }

    /// Whether the file has any gate for this pair / profile / tensor.
    pub fn has(&self, pair: &str, profile: &str, tensor: &str) -> bool {
        self.tensor_metrics(pair, profile, tensor).is_some() || self.tensor_metrics(pair, "*", tensor).is_some()
    }

    /// The entries of `defaults` (comparison pairs `candidate~reference`, and reference entries such as
    /// `plan_section_9`).
    pub fn pairs(&self) -> Vec<String> {
        self.defaults.keys().cloned().collect()
    }

    /// The tensors a pair gates for a profile (its `"*"` entries included).
    pub fn tensors(&self, pair: &str, profile: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for prof in ["*", profile] {
            if let Some(Value::Object(tensors)) = self.defaults.get(pair).and_then(|p| p.get(prof)) {
                for t in tensors.keys() {
                    if !out.contains(t) {
                        out.push(t.clone());
                    }
                }
            }
        }
        out
    }
}
