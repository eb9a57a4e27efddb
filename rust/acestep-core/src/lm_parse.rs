//! Parsing the planner's output text: the Rust twin of `runtimes/py_ort/acestep_ort/host/lm_parse.py` (upstream
//! `LLMHandler.parse_lm_output`, `_extract_lyrics_from_output`, the end of `create_sample_from_query` and
//! `inference.create_sample`'s conversions, 82252c2).
//!
//! [`create_sample_fields`] gives `create_sample_from_query`'s metadata dict; [`metadata_json`] renders it as
//! Python's `json.dumps(metadata, ensure_ascii=False, sort_keys=True)` (the `lm_metadata` capture) byte for byte.

use std::collections::BTreeMap;

use regex::Regex;

use crate::pyfmt::{is_py_space, py_strip};

/// A metadata value: Python's `int` (kept as its decimal text, any size), `str` or `bool`.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Int(String),
    Str(String),
    Bool(bool),
}

pub type Metadata = BTreeMap<String, MetaValue>;

/// `postprocess_caption`: strip each line, drop blanks, join by spaces.
pub fn postprocess_caption(caption: &str) -> String {
    caption.split('\n').map(py_strip).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Python's `int(text)` for a stripped string: optional sign, ASCII digits with single `_` between digits.
/// Returns the normalized decimal text (no leading zeros).
pub fn py_int(text: &str) -> Option<String> {
    let text = py_strip(text);
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let trimmed = clean.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some("0".to_string());
    }
    Some(format!("{sign}{trimmed}"))
}

fn reasoning_block(text: &str) -> Option<String> {
    for (open, close) in [("<think>", "</think>"), ("<reasoning>", "</reasoning>")] {
        if let Some(start) = text.find(open) {
            let body = &text[start + open.len()..];
            if let Some(end) = body.find(close) {
                return Some(py_strip(&body[..end]).to_string());
            }
        }
    }
    None
}

/// `parse_lm_output` (metadata part).
pub fn parse_lm_output(text: &str) -> Metadata {
    let mut metadata = Metadata::new();
    let mut reasoning = reasoning_block(text).unwrap_or_default();
    if reasoning.is_empty() {
        let head = text.split("<|audio_code_").next().unwrap_or("");
        reasoning = py_strip(head).to_string();
    }
    if reasoning.is_empty() {
        return metadata;
    }
    let mut key: Option<String> = None;
    let mut lines: Vec<&str> = Vec::new();
    let save = |metadata: &mut Metadata, key: &Option<String>, lines: &Vec<&str>| {
        let Some(key) = key else { return };
        if lines.is_empty() {
            return;
        }
        let value = lines.join("\n");
        match key.as_str() {
            "bpm" | "duration" => {
                let v = match py_int(&value) {
                    Some(i) => MetaValue::Int(i),
                    None => MetaValue::Str(py_strip(&value).to_string()),
                };
                metadata.insert(key.clone(), v);
            }
            "caption" => {
                metadata.insert(key.clone(), MetaValue::Str(postprocess_caption(&value)));
            }
            "genres" | "keyscale" | "language" | "timesignature" => {
                metadata.insert(key.clone(), MetaValue::Str(py_strip(&value).to_string()));
            }
            _ => {}
        }
    };
    for line in reasoning.split('\n') {
        if py_strip(line).starts_with('<') {
            continue;
        }
        let first_is_space = line.chars().next().is_some_and(is_py_space);
        if !line.is_empty() && !first_is_space && line.contains(':') {
            save(&mut metadata, &key, &lines);
            lines.clear();
            let (name, first) = line.split_once(':').unwrap_or((line, ""));
            key = Some(py_strip(name).to_lowercase());
            if !py_strip(first).is_empty() {
                lines.push(first);
            }
        } else if (line.starts_with(' ') || line.starts_with('\t')) && key.is_some() {
            lines.push(line);
        }
    }
    save(&mut metadata, &key, &lines);
    metadata
}

/// `_extract_lyrics_from_output`.
pub fn extract_lyrics(text: &str) -> String {
    let Some(pos) = text.find("</think>") else { return String::new() };
    let after = py_strip(&text[pos + "</think>".len()..]);
    if after.is_empty() {
        return String::new();
    }
    let header = Regex::new(r"(?i)\A#\s*Lyri[c|cs]?\s*\n").expect("static regex");
    let after = header.replace(after, "");
    let end = Regex::new(r"<\|im_end\|>\s*\z").expect("static regex");
    let after = end.replace(&after, "");
    py_strip(&after).to_string()
}

/// What `create_sample_from_query` returns (its `metadata` dict).
pub fn create_sample_fields(text: &str, instrumental: bool) -> Metadata {
    let mut metadata = parse_lm_output(text);
    let lyrics = extract_lyrics(text);
    if !lyrics.is_empty() {
        metadata.insert("lyrics".into(), MetaValue::Str(lyrics));
    } else if instrumental {
        metadata.insert("lyrics".into(), MetaValue::Str("[Instrumental]".into()));
    }
    metadata.insert("instrumental".into(), MetaValue::Bool(instrumental));
    metadata
}

/// `json.dumps(metadata, ensure_ascii=False, sort_keys=True)`.
pub fn metadata_json(metadata: &Metadata) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let items: Vec<String> = metadata
        .iter()
        .map(|(k, v)| {
            let value = match v {
                MetaValue::Int(i) => i.clone(),
                MetaValue::Str(s) => quote(s),
                MetaValue::Bool(b) => if *b { "true" } else { "false" }.to_string(),
            };
            format!("{}: {value}", quote(k))
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// `inference.create_sample`'s `CreateSampleResult` fields.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleResult {
    pub caption: String,
    pub lyrics: String,
    pub bpm: Option<i64>,
    pub duration: Option<f64>,
    pub keyscale: String,
    pub language: String,
    pub timesignature: String,
    pub instrumental: bool,
}

fn str_field(metadata: &Metadata, key: &str) -> Option<String> {
    match metadata.get(key)? {
        MetaValue::Str(s) => Some(s.clone()),
        MetaValue::Int(i) => Some(i.clone()),
        MetaValue::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
    }
}

/// Python's `float(text)` for the strings a metadata field can hold (underscores between digits allowed).
fn py_float(text: &str) -> Option<f64> {
    let t = py_strip(text);
    if t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    t.replace('_', "").parse::<f64>().ok()
}

/// `create_sample`: bpm `int`, duration `float`, `'N/A'` -> `''`, unparsable numbers -> None.
pub fn create_sample_result(metadata: &Metadata) -> SampleResult {
    let na = |v: Option<String>| v.filter(|s| s != "N/A").unwrap_or_default();
    let bpm = match metadata.get("bpm") {
        Some(MetaValue::Int(i)) => i.parse::<i64>().ok(),
        _ => None,
    };
    let duration = match metadata.get("duration") {
        Some(MetaValue::Int(i)) => i.parse::<f64>().ok(),
        Some(MetaValue::Str(s)) if !s.is_empty() && s != "N/A" => py_float(s),
        _ => None,
    };
    SampleResult {
        caption: str_field(metadata, "caption").unwrap_or_default(),
        lyrics: str_field(metadata, "lyrics").unwrap_or_default(),
        bpm,
        duration,
        keyscale: na(str_field(metadata, "keyscale")),
        language: na(str_field(metadata, "language").or_else(|| str_field(metadata, "vocal_language"))),
        timesignature: na(str_field(metadata, "timesignature")),
        instrumental: matches!(metadata.get("instrumental"), Some(MetaValue::Bool(true))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        metadata_json(&parse_lm_output(text))
    }

    #[test]
    fn python_int_rules() {
        for bad in ["", "_1", "1_", "1__2", "-", "1a", "--1"] {
            assert_eq!(py_int(bad), None, "{bad:?}");
        }
        assert_eq!(py_int("1_2").as_deref(), Some("12"));
        assert_eq!(py_int(" -007 ").as_deref(), Some("-7"));
        assert_eq!(py_int("+0").as_deref(), Some("0"));
    }

    #[test]
    fn python_float_rules() {
        for bad in ["", "_1", "1_", "1__0", "N/A", "x"] {
            assert_eq!(py_float(bad), None, "{bad:?}");
        }
        assert_eq!(py_float("1_0.5"), Some(10.5));
        assert_eq!(py_float(" 2.5 "), Some(2.5));
    }

    #[test]
    fn the_reasoning_block_wins_over_the_rest_of_the_text() {
        // (the same cases as tests/test_lm_host.py's, and one with text before the block)
        assert_eq!(json("<think>\nbpm: 120\n</think>\n\nlanguage: fr"), r#"{"bpm": 120}"#);
        assert_eq!(json("note\n<think>\nbpm: 120\n</think>\nlanguage: fr"), r#"{"bpm": 120}"#);
        assert_eq!(json("bpm: 90\n<|audio_code_1|>\nkeyscale: C major"), r#"{"bpm": 90}"#);
    }

    #[test]
    fn where_a_field_starts_and_what_continues_it() {
        assert_eq!(json("caption: one\n<x>: y\n  two"), r#"{"caption": "one two"}"#);
        assert_eq!(json("caption: one\nx y: z\n  two"), r#"{"caption": "one"}"#);
        assert_eq!(json("caption: a: b\n\tc"), r#"{"caption": "a: b c"}"#);
        assert_eq!(json("caption: one\n  two: x"), r#"{"caption": "one two: x"}"#); // indented: a continuation
        assert_eq!(json("caption: one\ntwo"), r#"{"caption": "one"}"#); // not indented: not a continuation
        assert_eq!(json("  two\ncaption: one"), r#"{"caption": "one"}"#); // a continuation before any field
    }
}
