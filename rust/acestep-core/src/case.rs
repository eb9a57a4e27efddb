//! Case files (`cases/*.json`): port of `runtimes/py_ort/acestep_ort/host/case.py` with the same checks, in the same order,
//! and the same messages (`<path>: field '<name>': <what is wrong>`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::pyfmt::{repr_float, repr_str};

pub const TASKS: [&str; 2] = ["text2music", "simple_mode"];
pub const FORMATS: [&str; 3] = ["wav", "flac", "mp3"];

/// The JSON types of Python's `json` module, by Python type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PyType {
    Dict,
    List,
    Str,
    Int,
    Float,
    Bool,
    NoneType,
}

impl PyType {
    fn name(self) -> &'static str {
        match self {
            PyType::Dict => "dict",
            PyType::List => "list",
            PyType::Str => "str",
            PyType::Int => "int",
            PyType::Float => "float",
            PyType::Bool => "bool",
            PyType::NoneType => "NoneType",
        }
    }
}

/// Python's json: a number literal with a fraction or an exponent is a float, otherwise an int.
fn number_is_float(n: &Number) -> bool {
    n.to_string().contains(['.', 'e', 'E'])
}

fn py_type(v: &Value) -> PyType {
    match v {
        Value::Object(_) => PyType::Dict,
        Value::Array(_) => PyType::List,
        Value::String(_) => PyType::Str,
        Value::Number(n) if number_is_float(n) => PyType::Float,
        Value::Number(_) => PyType::Int,
        Value::Bool(_) => PyType::Bool,
        Value::Null => PyType::NoneType,
    }
}

/// Python's `repr()` of a value decoded by `json.loads`.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) if number_is_float(n) => repr_float(n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => {
            let text = n.to_string();
            if text.trim_start_matches('-').trim_start_matches('0').is_empty() {
                "0".into()
            } else {
                text
            }
        }
        Value::String(s) => repr_str(s),
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", repr_str(k), py_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// (field, accepted types, required), in the order of `_FIELDS` in cases.py.
const FIELDS: [(&str, &[PyType], bool); 16] = [
    ("id", &[PyType::Str], true),
    ("task", &[PyType::Str], true),
    ("description", &[PyType::Str], false),
    ("caption", &[PyType::Str], false),
    ("lyrics", &[PyType::Str], false),
    ("language", &[PyType::Str], false),
    ("bpm", &[PyType::Int, PyType::NoneType], false),
    ("keyscale", &[PyType::Str], false),
    ("timesignature", &[PyType::Str], false),
    ("duration", &[PyType::Int, PyType::Float, PyType::NoneType], false),
    ("seeds", &[PyType::List], true),
    ("shift", &[PyType::Int, PyType::Float], false),
    ("timesteps", &[PyType::List, PyType::NoneType], false),
    ("output_format", &[PyType::Str], false),
    ("query", &[PyType::Str], false),
    ("instrumental", &[PyType::Bool], false),
];

/// How Python prints the accepted types: `str` for one type in "got" messages, `<class 'str'>` or a tuple
/// of those in "expected" messages.
fn types_repr(types: &[PyType]) -> String {
    let one = |t: &PyType| format!("<class '{}'>", t.name());
    if types.len() == 1 {
        one(&types[0])
    } else {
        format!("({})", types.iter().map(one).collect::<Vec<_>>().join(", "))
    }
}

fn types_name(types: &[PyType]) -> String {
    if types.len() == 1 {
        types[0].name().to_string()
    } else {
        types_repr(types)
    }
}

/// A malformed case file, or a `--case` that names none. The messages are Python's `CaseError` texts, byte for
/// byte; [`CaseError::field`] gives the field a message names without parsing it.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// One field is wrong: `<path>: field '<name>': <message>`.
    #[error("{}: field {}: {message}", path.display(), repr_str(field))]
    Field { path: PathBuf, field: String, message: String },
    /// The file as a whole (unreadable, not JSON, not an object): `<path>: <message>`.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// Python's `FileNotFoundError` text.
    #[error("[Errno 2] No such file or directory: {}", repr_str(&path.display().to_string()))]
    NotFound { path: PathBuf },
    /// `--case` is neither a file nor a case id of the cases folder.
    #[error("case {}: no such file, and no {}", repr_str(arg), candidate.display())]
    Unresolved { arg: String, candidate: PathBuf },
}

impl CaseError {
    /// The field the message names, where it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            CaseError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The case file (or folder, or the path looked up last) the message names.
    pub fn path(&self) -> &Path {
        match self {
            CaseError::Field { path, .. } | CaseError::File { path, .. } | CaseError::NotFound { path } => path,
            CaseError::Unresolved { candidate, .. } => candidate,
        }
    }
}

fn fail(path: &Path, field: &str, message: impl AsRef<str>) -> CaseError {
    CaseError::Field { path: path.to_path_buf(), field: field.to_string(), message: message.as_ref().to_string() }
}

fn file_error(path: &Path, message: String) -> CaseError {
    CaseError::File { path: path.to_path_buf(), message }
}

/// The seven music fields of a text2music request: what a case file gives, what the pipeline's request carries
/// and what the planner fills in for a simple_mode case ([`crate::lm_planner::text2music_fields`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MusicFields {
    pub caption: String,
    pub lyrics: String,
    pub language: String,
    pub bpm: Option<i64>,
    pub keyscale: String,
    pub timesignature: String,
    /// `None`: no duration (absent, null or <= 0 in the file)
    pub duration: Option<f64>,
}

/// One validated case file.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub task: String,
    pub path: PathBuf,
    pub description: String,
    pub music: MusicFields,
    pub seeds: Vec<u64>,
    pub shift: f64,
    pub timesteps: Option<Vec<f64>>,
    pub output_format: String,
    pub query: String,
    pub instrumental: bool,
    pub sha256: String,
}

impl Case {
    pub fn batch_size(&self) -> usize {
        self.seeds.len()
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A JSON number as a finite f64, like Python's `_number`: one too large for a float (`1e400`, a 400-digit
/// integer: serde_json's arbitrary precision keeps it, `as_f64` gives inf or nothing) is refused, field named.
fn finite(path: &Path, field: &str, v: &Value) -> Result<f64, CaseError> {
    let x = num(v);
    if x.is_finite() {
        Ok(x)
    } else {
        Err(fail(path, field, "number out of range (too large for a float)"))
    }
}

fn string(data: &Map<String, Value>, key: &str, default: &str) -> String {
    data.get(key).and_then(Value::as_str).unwrap_or(default).to_string()
}

/// The stem of a file name as Python's `Path.stem` gives it.
fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Read and validate one case file.
pub fn load_case(path: &Path) -> Result<Case, CaseError> {
    let raw = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaseError::NotFound { path: path.to_path_buf() }
        } else {
            file_error(path, format!("cannot read: {e}"))
        }
    })?;
    parse_case(path, &raw)
}

/// Validate the bytes of a case file; `path` names the file in messages and its stem must equal `id`
/// (the C-ABI library passes `<id>.json` for a case given as JSON text).
pub fn parse_case(path: &Path, raw: &[u8]) -> Result<Case, CaseError> {
    let text = std::str::from_utf8(raw).map_err(|e| file_error(path, format!("not valid UTF-8 JSON: {e}")))?;
    let data: Value = serde_json::from_str(text).map_err(|e| file_error(path, format!("not valid UTF-8 JSON: {e}")))?;
    let Value::Object(data) = data else {
        return Err(file_error(path, "top level must be a JSON object".into()));
    };
    for key in data.keys() {
        if !FIELDS.iter().any(|(name, _, _)| name == key) {
            let mut allowed: Vec<&str> = FIELDS.iter().map(|(n, _, _)| *n).collect();
            allowed.sort_unstable();
            return Err(fail(path, key, format!("unknown field (allowed: {})", allowed.join(", "))));
        }
    }
    for (key, types, required) in FIELDS {
        let Some(value) = data.get(key) else {
            if required {
                return Err(fail(path, key, "required field is missing"));
            }
            continue;
        };
        let t = py_type(value);
        if t == PyType::Bool && !types.contains(&PyType::Bool) {
            return Err(fail(path, key, format!("expected {}, got bool", types_repr(types))));
        }
        if !types.contains(&t) {
            return Err(fail(path, key, format!("expected {}, got {}", types_name(types), t.name())));
        }
    }

    let id = string(&data, "id", "");
    if id != stem(path) {
        return Err(fail(
            path,
            "id",
            format!("{} must equal the file name stem {}", repr_str(&id), repr_str(&stem(path))),
        ));
    }
    let task = string(&data, "task", "");
    if !TASKS.contains(&task.as_str()) {
        return Err(fail(path, "task", format!("{} is not one of ('text2music', 'simple_mode')", repr_str(&task))));
    }
    // Absent, null or <= 0: upstream's "no duration" (-1): 120 s of latents, "30 seconds" in the metas.
    let duration = match data.get("duration") {
        Some(v @ Value::Number(_)) => {
            let d = finite(path, "duration", v)?;
            if d > 600.0 {
                return Err(fail(path, "duration", format!("{} is out of range: at most 600 seconds", repr_float(d))));
            }
            (d > 0.0).then_some(d)
        }
        _ => None,
    };
    let seed_values = data.get("seeds").and_then(Value::as_array).cloned().unwrap_or_default();
    if !(1..=8).contains(&seed_values.len()) {
        return Err(fail(path, "seeds", format!("needs 1..8 seeds (one per batch item), got {}", seed_values.len())));
    }
    let mut seeds = Vec::with_capacity(seed_values.len());
    for s in &seed_values {
        let ok = match s {
            Value::Number(n) if !number_is_float(n) => n.as_u64().filter(|v| *v < (1u64 << 63)),
            _ => None,
        };
        match ok {
            Some(v) => seeds.push(v),
            None => return Err(fail(path, "seeds", format!("{} is not a non-negative integer seed", py_repr(s)))),
        }
    }
    let bpm = match data.get("bpm") {
        Some(Value::Number(n)) => {
            let in_range = n.as_i64().filter(|b| (30..=300).contains(b));
            match in_range {
                Some(b) => Some(b),
                None => return Err(fail(path, "bpm", format!("{n} is out of range 30..300"))),
            }
        }
        _ => None,
    };
    let shift = match data.get("shift") {
        Some(v) => finite(path, "shift", v)?,
        None => 1.0,
    };
    if shift.is_nan() || shift <= 0.0 {
        return Err(fail(path, "shift", format!("{} must be > 0", repr_float(shift))));
    }
    let timesteps = match data.get("timesteps") {
        Some(Value::Array(items)) => {
            if items.is_empty() || items.iter().any(|t| !matches!(t, Value::Number(_))) {
                return Err(fail(path, "timesteps", "must be a non-empty list of numbers"));
            }
            let values = items.iter().map(|t| finite(path, "timesteps", t)).collect::<Result<Vec<f64>, _>>()?;
            if values.iter().any(|t| !(0.0..=1.0).contains(t)) {
                return Err(fail(path, "timesteps", "values must lie in [0, 1]"));
            }
            Some(values)
        }
        _ => None,
    };
    let fmt = string(&data, "output_format", "wav");
    if !FORMATS.contains(&fmt.as_str()) {
        return Err(fail(path, "output_format", format!("{} is not one of ('wav', 'flac', 'mp3')", repr_str(&fmt))));
    }
    let caption = string(&data, "caption", "");
    let query = string(&data, "query", "");
    if task == "simple_mode" && query.is_empty() {
        return Err(fail(path, "query", "simple_mode needs the user query for the LM planner"));
    }

    Ok(Case {
        id,
        task,
        path: path.to_path_buf(),
        description: string(&data, "description", ""),
        music: MusicFields {
            caption,
            lyrics: string(&data, "lyrics", ""),
            language: string(&data, "language", "unknown"),
            bpm,
            keyscale: string(&data, "keyscale", ""),
            timesignature: string(&data, "timesignature", ""),
            duration,
        },
        seeds,
        shift,
        timesteps,
        output_format: fmt,
        query,
        instrumental: data.get("instrumental").and_then(Value::as_bool).unwrap_or(false),
        sha256: Sha256::digest(raw).iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// `--case` of the CLIs: a case file path, or a case id looked up in `cases_dir` (Python's `resolve_case`).
pub fn resolve_case(arg: &str, cases_dir: &Path) -> Result<Case, CaseError> {
    let path = Path::new(arg);
    if path.is_file() {
        return load_case(path);
    }
    let candidate = cases_dir.join(format!("{arg}.json"));
    if candidate.is_file() {
        return load_case(&candidate);
    }
    Err(CaseError::Unresolved { arg: arg.to_string(), candidate })
}

/// All case files of a folder (tolerances.json excluded), sorted by file name.
pub fn discover_cases(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, format!("cannot list: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.file_name().is_some_and(|n| n != "tolerances.json"))
        .collect();
    files.sort();
    files.iter().map(|p| load_case(p)).collect()
}
