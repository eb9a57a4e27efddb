//! Upstream's constrained-decoding FSM for the 5 Hz LM planner (simple mode), rule for rule: the Rust twin of
//! `runtimes/py_ort/acestep_ort/host/lm_fsm.py`, itself a port of `MetadataConstrainedLogitsProcessor`
//! (`acestep/constrained_logits_processor.py` at 82252c2). Quirks are reproduced, not fixed
//! (`docs/lm_planner.md` lists them). Both FSMs are held equal by the shared vectors `tests/vectors/lm_fsm.json`.
//!
//! # API (what a runtime or the C ABI calls)
//!
//! ```text
//! let tables = FsmTables::new(&vocab, &genres, max_duration)?;   // once per tokenizer + genres + max_duration
//! let tables = Arc::new(tables);   // an FSM owns a share of its tables (cached per max_duration)
//! let mut fsm = LmFsm::new(tables.clone(), &vocab, &user_metadata)?;   // once per generation ("understand" phase)
//! loop {
//!     fsm.apply(&mut logits_row)?;   // masks in place: disallowed ids become -inf, allowed ones keep their value
//!     let token = argmax(&logits_row) as u32;   // parity mode; lm_planner has the other processors
//!     fsm.update(token)?;            // advance with the chosen id
//! }
//! let (text, json) = lm_planner::finalize_metadata(&vocab, &tokens, instrumental)?;  // metadata JSON
//! ```
//!
//! * [`LmVocab`] is the tokenizer surface upstream uses (`encode(text, add_special_tokens=False)`,
//!   `decode([id])` with special tokens kept, `len(tokenizer)`, eos / pad ids); [`crate::lm_tokenizer::LmTokenizer`]
//!   implements it on the `tokenizers` crate, tests on recorded tables.
//! * `genres` is the already-loaded list ([`load_genres`] reads `genres_vocab.txt` text);
//!   `max_duration` is upstream's machine-dependent cap (10..=600).
//! * `user_metadata` maps field names (`bpm`, `caption`, `duration`, `genres`, `keyscale`, `language`,
//!   `timesignature`) to values injected verbatim (simple mode: only `language`, see [`simple_mode_user_metadata`]).
//! * [`LmFsm::allowed`] gives the allowed-id mask without touching logits (computed on a copy: some
//!   states look at the raw argmax).
//!
//! Scope: phases `understand` (simple mode) and `cot`; the `codes` phase (which scans the prompt for
//! `</think>`) is refused. Batch size 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::pyfmt::{is_py_space, py_strip};

/// Upstream constants (`acestep/constants.py`, 82252c2), as in `runtimes/py_ort/acestep_ort/host/lm_tokenizer.py`.
pub const VALID_LANGUAGES: [&str; 51] = [
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu",
    "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr",
    "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
];
pub const KEYSCALE_NOTES: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];
pub const KEYSCALE_ACCIDENTALS: [&str; 5] = ["", "#", "b", "♯", "♭"];
pub const KEYSCALE_MODES: [&str; 2] = ["major", "minor"];
pub const BPM_MIN: i64 = 30;
pub const BPM_MAX: i64 = 300;
pub const DURATION_MIN: i64 = 10;
pub const DURATION_MAX: i64 = 600;
pub const VALID_TIME_SIGNATURES: [i64; 4] = [2, 3, 4, 6];
pub const MAX_AUDIO_CODE: u64 = 63999;
/// The order of the CoT fields (`FIELD_ORDER`).
pub const FIELD_ORDER: [&str; 7] = ["bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature"];

#[derive(Debug, thiserror::Error)]
pub enum FsmError {
    #[error("the genres vocabulary is empty: the planner needs upstream's genres_vocab.txt (or the synthetic checkpoint's) as an input; see docs/lm_planner.md")]
    NoGenres,
    #[error("max_duration {0} is outside 10..600 seconds (upstream's duration field could not be generated at all)")]
    MaxDuration(i64),
    #[error("invalid generation phase {0:?} (the Rust FSM runs \"understand\" and \"cot\")")]
    Phase(String),
    #[error("unknown user metadata field {0:?} (expected one of bpm, caption, duration, genres, keyscale, language, timesignature)")]
    UserField(String),
    #[error("logits row has {got} entries, the LM vocabulary {want}")]
    VocabSize { got: usize, want: usize },
    #[error("token id {0} is outside the LM vocabulary")]
    Token(u32),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// The tokenizer surface of upstream's planner code.
pub trait LmVocab {
    /// `len(tokenizer)` (added tokens included).
    fn vocab_size(&self) -> usize;
    /// `tokenizer.encode(text, add_special_tokens=False)`.
    fn encode(&self, text: &str) -> Result<Vec<u32>, FsmError>;
    /// `tokenizer.decode(ids, skip_special_tokens=False)`.
    fn decode(&self, ids: &[u32]) -> Result<String, FsmError>;
    fn eos_token_id(&self) -> u32;
    fn pad_token_id(&self) -> Option<u32>;
}

/// `_load_genres_vocab`: one genre per line, stripped, blank and `#` lines skipped, lower-cased.
pub fn load_genres(text: &str) -> Vec<String> {
    py_splitlines(text)
        .into_iter()
        .map(py_strip)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.to_lowercase())
        .collect()
}

/// Python's `str.splitlines()` (no trailing empty line; `\r\n` is one break).
pub fn py_splitlines(text: &str) -> Vec<&str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if breaks(c) {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = chars.peek() {
                    chars.next();
                    start = j + 1;
                }
            }
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `create_sample_from_query`: a vocal language other than None / blank / "unknown" is injected verbatim.
pub fn simple_mode_user_metadata(vocal_language: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(lang) = vocal_language {
        let lang = py_strip(lang);
        if !lang.is_empty() && lang.to_lowercase() != "unknown" {
            out.insert("language".to_string(), lang.to_string());
        }
    }
    out
}

/// `FSMState` (upstream names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    ThinkTag,
    NewlineAfterThink,
    BpmName,
    BpmValue,
    NewlineAfterBpm,
    CaptionName,
    CaptionValue,
    DurationName,
    DurationValue,
    NewlineAfterDuration,
    GenresName,
    GenresValue,
    NewlineAfterGenres,
    KeyscaleName,
    KeyscaleValue,
    NewlineAfterKeyscale,
    LanguageName,
    LanguageValue,
    TimesigName,
    TimesigValue,
    NewlineAfterTimesig,
    ThinkEndTag,
    CodesGeneration,
    Completed,
}

impl State {
    fn fixed_string(self) -> Option<&'static str> {
        Some(match self {
            State::ThinkTag => "<think>",
            State::NewlineAfterThink => "\n",
            State::BpmName => "bpm:",
            State::CaptionName => "caption:",
            State::DurationName => "duration:",
            State::GenresName => "genres:",
            State::KeyscaleName => "keyscale:",
            State::LanguageName => "language:",
            State::TimesigName => "timesignature:",
            State::ThinkEndTag => "</think>",
            _ => return None,
        })
    }

    fn name_state(field: &str) -> Option<State> {
        Some(match field {
            "bpm" => State::BpmName,
            "caption" => State::CaptionName,
            "duration" => State::DurationName,
            "genres" => State::GenresName,
            "keyscale" => State::KeyscaleName,
            "language" => State::LanguageName,
            "timesignature" => State::TimesigName,
            _ => return None,
        })
    }

    /// `update_state`'s caption-ending map (caption and bpm are not in it upstream).
    fn caption_ending_target(name: &str) -> Option<State> {
        Some(match name {
            "duration" => State::DurationValue,
            "genres" => State::GenresValue,
            "keyscale" => State::KeyscaleValue,
            "language" => State::LanguageValue,
            "timesignature" => State::TimesigValue,
            _ => return None,
        })
    }

    /// Every state whose fixed string the tables precompute.
    const FIXED: [State; 10] = [
        State::ThinkTag,
        State::NewlineAfterThink,
        State::BpmName,
        State::CaptionName,
        State::DurationName,
        State::GenresName,
        State::KeyscaleName,
        State::LanguageName,
        State::TimesigName,
        State::ThinkEndTag,
    ];
}

/// Prefix tree of a value field: token-id prefix -> allowed next ids (the newline where a value is complete).
pub type PrefixTree = HashMap<Vec<u32>, BTreeSet<u32>>;

#[derive(Default, Debug)]
struct TrieNode {
    children: BTreeMap<char, usize>,
    end: bool,
}

/// Everything upstream precomputes once per tokenizer (`__init__`); shared by every generation.
pub struct FsmTables {
    pub vocab_size: usize,
    pub max_duration: i64,
    pub eos_token_id: u32,
    pub pad_token_id: Option<u32>,
    /// `encode("\n")[-1]` (None when "\n" encodes to nothing).
    pub newline_token: Option<u32>,
    pub backtick_token: Option<u32>,
    pub digit_tokens: BTreeMap<u32, u32>,
    /// `decode([id])` of every id.
    pub token_text: Vec<String>,
    /// Ids of `<|audio_code_N|>` with N in 0..=63999.
    pub audio_code_ids: Vec<u32>,
    is_audio_code: Vec<bool>,
    char_to_tokens: HashMap<String, BTreeSet<u32>>,
    token_to_norm: Vec<Option<String>>,
    pub bpm_tree: PrefixTree,
    pub duration_tree: PrefixTree,
    pub timesig_tree: PrefixTree,
    pub keyscale_tree: PrefixTree,
    pub language_tree: PrefixTree,
    genres_trie: Vec<TrieNode>,
    /// `_get_allowed_tokens_for_fixed_string(remaining)` for every suffix of every fixed string.
    fixed: HashMap<String, Vec<u32>>,
}

/// Python truthiness of an optional token id (`if self.newline_token:`): id 0 counts as missing, as upstream.
fn truthy(id: Option<u32>) -> Option<u32> {
    id.filter(|&i| i != 0)
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

fn char_slice(s: &str, start: usize, end: usize) -> String {
    s.chars().skip(start).take(end.saturating_sub(start)).collect()
}

fn first_char_lower(s: &str) -> Option<String> {
    s.chars().next().map(|c| c.to_lowercase().collect())
}

fn audio_code_value(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("<|audio_code_")?.strip_suffix("|>")?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // `\d` of Python's `re` also matches non-ASCII digits; such tokens would fail int() range-wise anyway
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// Python's `str.isdigit()` on a whole string (ASCII digits and Unicode numeric characters).
fn py_isdigit(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric()))
}

impl FsmTables {
    pub fn new(vocab: &dyn LmVocab, genres: &[String], max_duration: i64) -> Result<Self, FsmError> {
        if genres.is_empty() {
            return Err(FsmError::NoGenres);
        }
        if !(DURATION_MIN..=DURATION_MAX).contains(&max_duration) {
            return Err(FsmError::MaxDuration(max_duration));
        }
        let vocab_size = vocab.vocab_size();
        let last = |text: &str| -> Result<Option<u32>, FsmError> { Ok(vocab.encode(text)?.last().copied()) };
        let mut digit_tokens = BTreeMap::new();
        for d in 0..10u32 {
            if let Some(id) = last(&d.to_string())? {
                digit_tokens.insert(d, id);
            }
        }
        let newline_token = last("\n")?;
        let backtick_token = last("`")?;
        let mut token_text = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size {
            token_text.push(vocab.decode(&[i as u32])?);
        }
        let mut audio_code_ids = Vec::new();
        let mut is_audio_code = vec![false; vocab_size];
        for (i, text) in token_text.iter().enumerate() {
            if audio_code_value(text).is_some_and(|v| v <= MAX_AUDIO_CODE) {
                audio_code_ids.push(i as u32);
                is_audio_code[i] = true;
            }
        }
        // _precompute_char_token_mapping
        let mut char_to_tokens: HashMap<String, BTreeSet<u32>> = HashMap::new();
        let mut token_to_norm = vec![None; vocab_size];
        for (i, text) in token_text.iter().enumerate() {
            let Some(first) = first_char_lower(text) else { continue };
            let low = text.to_lowercase();
            token_to_norm[i] = Some(if py_strip(&low).is_empty() {
                " ".to_string()
            } else {
                low.trim_end_matches(is_py_space).to_string()
            });
            char_to_tokens.entry(first).or_default().insert(i as u32);
            let stripped = text.trim_start_matches(is_py_space);
            if !stripped.is_empty() && stripped != text {
                if let Some(c) = first_char_lower(stripped) {
                    char_to_tokens.entry(c).or_default().insert(i as u32);
                }
            }
        }
        let mut genres_trie = vec![TrieNode::default()];
        for genre in genres {
            let mut node = 0;
            for ch in genre.chars() {
                node = match genres_trie[node].children.get(&ch) {
                    Some(&n) => n,
                    None => {
                        genres_trie.push(TrieNode::default());
                        let n = genres_trie.len() - 1;
                        genres_trie[node].children.insert(ch, n);
                        n
                    }
                };
            }
            genres_trie[node].end = true;
        }
        let mut tables = FsmTables {
            vocab_size,
            max_duration,
            eos_token_id: vocab.eos_token_id(),
            pad_token_id: vocab.pad_token_id(),
            newline_token,
            backtick_token,
            digit_tokens,
            token_text,
            audio_code_ids,
            is_audio_code,
            char_to_tokens,
            token_to_norm,
            bpm_tree: PrefixTree::new(),
            duration_tree: PrefixTree::new(),
            timesig_tree: PrefixTree::new(),
            keyscale_tree: PrefixTree::new(),
            language_tree: PrefixTree::new(),
            genres_trie,
            fixed: HashMap::new(),
        };
        let numbers = |lo: i64, hi: i64| (lo..=hi).map(|v| v.to_string()).collect::<Vec<_>>();
        tables.bpm_tree = tables.value_tree(vocab, &numbers(BPM_MIN, BPM_MAX), "bpm", false, false)?;
        tables.duration_tree =
            tables.value_tree(vocab, &numbers(DURATION_MIN, max_duration), "duration", false, false)?;
        let sigs: Vec<String> = VALID_TIME_SIGNATURES.iter().map(|v| v.to_string()).collect();
        tables.timesig_tree = tables.value_tree(vocab, &sigs, "timesignature", false, false)?;
        let mut keys = Vec::new();
        for n in KEYSCALE_NOTES {
            for a in KEYSCALE_ACCIDENTALS {
                for m in KEYSCALE_MODES {
                    keys.push(format!("{n}{a} {m}"));
                }
            }
        }
        tables.keyscale_tree = tables.value_tree(vocab, &keys, "keyscale", true, false)?;
        let langs: Vec<String> = VALID_LANGUAGES.iter().map(|s| s.to_string()).collect();
        tables.language_tree = tables.value_tree(vocab, &langs, "language", false, true)?;
        for state in State::FIXED {
            let fixed = state.fixed_string().unwrap_or_default();
            for start in 0..char_len(fixed) {
                let remaining = char_slice(fixed, start, char_len(fixed));
                if let std::collections::hash_map::Entry::Vacant(slot) = tables.fixed.entry(remaining) {
                    let ids = fixed_string_tokens(vocab, slot.key())?;
                    slot.insert(ids);
                }
            }
        }
        Ok(tables)
    }

    /// `_build_numeric/keyscale/language_prefix_tree`: tokens of `"name: value"` after those of `"name:"`; a
    /// value whose tokens do not start with the context's is silently dropped.
    fn value_tree(
        &self,
        vocab: &dyn LmVocab,
        values: &[String],
        name: &str,
        first_must_be_note: bool,
        skip_empty: bool,
    ) -> Result<PrefixTree, FsmError> {
        let context = vocab.encode(&format!("{name}:"))?;
        let mut tree = PrefixTree::new();
        for value in values {
            let full = vocab.encode(&format!("{name}: {value}"))?;
            if full.len() < context.len() || full[..context.len()] != context[..] {
                continue;
            }
            let ids = &full[context.len()..];
            if (first_must_be_note || skip_empty) && ids.is_empty() {
                continue;
            }
            if first_must_be_note {
                let first = vocab.decode(&ids[..1])?;
                let first = first.trim_start_matches(is_py_space);
                let upper: String = first.chars().next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
                // Python: `"" in "ABCDEFG"` is True
                if !"ABCDEFG".contains(upper.as_str()) {
                    continue;
                }
            }
            for i in 0..=ids.len() {
                let allowed = tree.entry(ids[..i].to_vec()).or_default();
                if i < ids.len() {
                    allowed.insert(ids[i]);
                } else if let Some(nl) = truthy(self.newline_token) {
                    allowed.insert(nl);
                }
            }
        }
        Ok(tree)
    }

    /// The trie node of a (lower-cased) genres prefix.
    fn genres_node(&self, prefix: &str) -> Option<usize> {
        let mut node = 0;
        for ch in prefix.to_lowercase().chars() {
            node = *self.genres_trie[node].children.get(&ch)?;
        }
        Some(node)
    }

    /// Is `id` an in-range audio code?
    pub fn is_audio_code(&self, id: u32) -> bool {
        self.is_audio_code.get(id as usize).copied().unwrap_or(false)
    }
}

/// `_get_allowed_tokens_for_fixed_string`: the longest prefix that encodes to one token, else the fallback
/// candidate list (longest prefix first).
fn fixed_string_tokens(vocab: &dyn LmVocab, remaining: &str) -> Result<Vec<u32>, FsmError> {
    let n = char_len(remaining);
    for end in (1..=n).rev() {
        let ids = vocab.encode(&char_slice(remaining, 0, end))?;
        if ids.len() == 1 {
            return Ok(ids);
        }
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut best: BTreeMap<u32, usize> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new(); // insertion order, for Python's stable sort on ties
    for end in 1..(n + 1).min(20) {
        let prefix = char_slice(remaining, 0, end);
        let ids = vocab.encode(&prefix)?;
        if let Some(&first) = ids.first() {
            let np = prefix.trim_start_matches(is_py_space).to_lowercase();
            let decoded = vocab.decode(&[first])?;
            let nd = decoded.trim_start_matches(is_py_space).to_lowercase();
            if nd.starts_with(&np) || np.starts_with(&nd) {
                match best.get(&first) {
                    Some(&e) if end <= e => {}
                    Some(_) => {
                        best.insert(first, end);
                    }
                    None => {
                        best.insert(first, end);
                        order.push(first);
                    }
                }
            }
        }
    }
    let mut result: Vec<(u32, usize)> = order.iter().map(|t| (*t, best[t])).collect();
    result.sort_by_key(|r| std::cmp::Reverse(r.1)); // stable, as Python's sorted(reverse=True)
    Ok(result.into_iter().map(|(t, _)| t).collect())
}

/// The generation phase (`generation_phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Simple mode: CoT metadata, then free text with in-range audio codes masked.
    Understand,
    /// CoT metadata, then audio codes only.
    Cot,
}

/// Options of `_setup_constrained_processor` besides the user metadata (simple mode: all default).
#[derive(Clone, Debug)]
pub struct FsmOptions {
    pub phase: Phase,
    pub skip_genres: bool,
    pub skip_caption: bool,
    pub skip_language: bool,
    pub target_duration: Option<f64>,
    pub stop_at_reasoning: bool,
}

impl Default for FsmOptions {
    fn default() -> Self {
        FsmOptions {
            phase: Phase::Understand,
            skip_genres: false,
            skip_caption: false,
            skip_language: false,
            target_duration: None,
            stop_at_reasoning: false,
        }
    }
}

/// Per-generation state of upstream's processor.
pub struct LmFsm {
    /// Shared with every generation on the same tokenizer, genres and max_duration.
    tables: Arc<FsmTables>,
    opts: FsmOptions,
    /// `encode(" {value}\n")` of each user-provided field (None where not given).
    user_ids: HashMap<&'static str, Vec<u32>>,
    user_given: HashMap<&'static str, bool>,
    target_codes: Option<i64>,
    next_state: HashMap<State, State>,
    pub state: State,
    position_in_state: usize,
    accumulated_value: String,
    accumulated_token_ids: Vec<u32>,
    codes_count: i64,
    queue: Vec<u32>,
    current_user_field: Option<&'static str>,
    caption_after_newline: bool,
    caption_token_count: usize,
    caption_ending: bool,
    pending_field_name: String,
}

impl LmFsm {
    /// Simple mode's processor (`understand`, nothing skipped) with `user_metadata` injected.
    pub fn new(
        tables: Arc<FsmTables>,
        vocab: &dyn LmVocab,
        user_metadata: &BTreeMap<String, String>,
    ) -> Result<Self, FsmError> {
        Self::with_options(tables, vocab, user_metadata, FsmOptions::default())
    }

    pub fn with_options(
        tables: Arc<FsmTables>,
        vocab: &dyn LmVocab,
        user_metadata: &BTreeMap<String, String>,
        opts: FsmOptions,
    ) -> Result<Self, FsmError> {
        let mut user_ids = HashMap::new();
        let mut user_given = HashMap::new();
        for (key, value) in user_metadata {
            let field =
                FIELD_ORDER.iter().find(|f| **f == key.as_str()).ok_or_else(|| FsmError::UserField(key.clone()))?;
            user_ids.insert(*field, vocab.encode(&format!(" {value}\n"))?);
            user_given.insert(*field, true);
        }
        let target_codes = opts.target_duration.filter(|d| *d > 0.0).map(|d| (d * 5.0) as i64);
        let mut fsm = LmFsm {
            tables,
            opts,
            user_ids,
            user_given,
            target_codes,
            next_state: HashMap::new(),
            state: State::ThinkTag,
            position_in_state: 0,
            accumulated_value: String::new(),
            accumulated_token_ids: Vec::new(),
            codes_count: 0,
            queue: Vec::new(),
            current_user_field: None,
            caption_after_newline: false,
            caption_token_count: 0,
            caption_ending: false,
            pending_field_name: String::new(),
        };
        fsm.next_state = fsm.transitions();
        Ok(fsm)
    }

    /// `_get_next_field_state`.
    fn next_field_state(&self, current: &str) -> State {
        let Some(pos) = FIELD_ORDER.iter().position(|f| *f == current) else { return State::ThinkEndTag };
        for f in &FIELD_ORDER[pos + 1..] {
            let skipped = (*f == "genres" && self.opts.skip_genres)
                || (*f == "caption" && self.opts.skip_caption)
                || (*f == "language" && self.opts.skip_language);
            if !skipped {
                return State::name_state(f).unwrap_or(State::ThinkEndTag);
            }
        }
        State::ThinkEndTag
    }

    /// `_build_state_transitions`.
    fn transitions(&self) -> HashMap<State, State> {
        use State::*;
        let mut nxt = HashMap::from([
            (ThinkTag, NewlineAfterThink),
            (NewlineAfterThink, BpmName),
            (ThinkEndTag, CodesGeneration),
            (CodesGeneration, Completed),
            (BpmName, BpmValue),
            (BpmValue, self.next_field_state("bpm")),
        ]);
        if !self.opts.skip_caption {
            nxt.insert(CaptionName, CaptionValue);
            nxt.insert(CaptionValue, self.next_field_state("caption"));
        }
        nxt.insert(DurationName, DurationValue);
        nxt.insert(DurationValue, self.next_field_state("duration"));
        if !self.opts.skip_genres {
            nxt.insert(GenresName, GenresValue);
            nxt.insert(GenresValue, self.next_field_state("genres"));
        }
        nxt.insert(KeyscaleName, KeyscaleValue);
        nxt.insert(KeyscaleValue, self.next_field_state("keyscale"));
        if !self.opts.skip_language {
            nxt.insert(LanguageName, LanguageValue);
            nxt.insert(LanguageValue, self.next_field_state("language"));
        }
        nxt.insert(TimesigName, TimesigValue);
        nxt.insert(TimesigValue, ThinkEndTag);
        nxt
    }

    fn reset_field(&mut self) {
        self.position_in_state = 0;
        self.accumulated_value.clear();
        self.accumulated_token_ids.clear();
    }

    /// `_transition_to_next_state` (understand phase: `</think>` leads to COMPLETED).
    fn transition(&mut self) {
        let Some(&next) = self.next_state.get(&self.state) else { return };
        let next = if self.state == State::ThinkEndTag && self.opts.phase == Phase::Understand {
            State::Completed
        } else {
            next
        };
        self.state = next;
        self.reset_field();
        self.caption_after_newline = false;
        self.caption_token_count = 0;
        self.caption_ending = false;
        self.pending_field_name.clear();
    }

    /// The allowed-id mask of this step (the logits decide the raw-argmax rules of the caption ending and the
    /// language's first token, so they are needed; they are not modified).
    pub fn allowed(&mut self, logits: &[f32]) -> Result<Vec<bool>, FsmError> {
        let mut row = logits.to_vec();
        self.apply(&mut row)?;
        Ok(row.iter().map(|v| v.is_finite()).collect())
    }

    /// `__call__` for one row, in place: disallowed ids become -inf (allowed ones keep their values, bit for bit
    /// as numpy computes them: the additive masks add +0.0).
    pub fn apply(&mut self, scores: &mut [f32]) -> Result<(), FsmError> {
        let tables = Arc::clone(&self.tables);
        let t = &*tables;
        if scores.len() != t.vocab_size {
            return Err(FsmError::VocabSize { got: scores.len(), want: t.vocab_size });
        }
        if self.state == State::Completed {
            if self.opts.phase == Phase::Understand {
                add_mask(scores, |i| t.is_audio_code[i]);
            }
            return Ok(());
        }
        if self.state == State::CodesGeneration {
            let eos = t.eos_token_id as usize;
            add_mask(scores, |i| !(t.is_audio_code[i] || i == eos));
            if let Some(target) = self.target_codes {
                if eos < scores.len() {
                    if self.codes_count < target {
                        scores[eos] = f32::NEG_INFINITY;
                    } else {
                        whitelist(scores, &[t.eos_token_id]);
                    }
                }
            }
            return Ok(());
        }
        self.process_single(scores);
        Ok(())
    }

    /// The per-field "user-provided value" branch: queue `encode(" {value}\n")` and force its first id.
    fn start_injection(&mut self, name: &'static str, scores: &mut [f32], empty: bool) -> bool {
        if !self.user_given.get(name).copied().unwrap_or(false) || !self.queue.is_empty() || !empty {
            return false;
        }
        let ids = self.user_ids.get(name).cloned().unwrap_or_default();
        let Some(&first) = ids.first() else { return false };
        self.queue = ids;
        self.current_user_field = Some(name);
        whitelist(scores, &[first]);
        true
    }

    fn force_newline_or_keep(&self, scores: &mut [f32]) {
        if let Some(nl) = truthy(self.tables.newline_token) {
            whitelist(scores, &[nl]);
        }
    }

    /// `_process_single_sequence`.
    fn process_single(&mut self, scores: &mut [f32]) {
        let tables = Arc::clone(&self.tables);
        let t = &*tables;
        if let Some(&first) = self.queue.first() {
            whitelist(scores, &[first]);
            return;
        }
        let st = self.state;
        if let Some(fixed) = st.fixed_string() {
            let remaining = char_slice(fixed, self.position_in_state, char_len(fixed));
            let allowed = t.fixed.get(&remaining).cloned().unwrap_or_default();
            let stop = st == State::ThinkEndTag && self.opts.stop_at_reasoning;
            if !allowed.is_empty() {
                if stop && char_len(fixed) - self.position_in_state.min(char_len(fixed)) <= 10 {
                    whitelist(scores, &[t.eos_token_id]);
                    return;
                }
                whitelist(scores, &allowed);
                return;
            }
            if stop {
                whitelist(scores, &[t.eos_token_id]);
                return;
            }
            self.transition();
            if self.state.fixed_string().is_some() {
                return;
            }
            scores.fill(0.0); // upstream zeroes the scores before re-processing
            self.process_single(scores);
            return;
        }
        match st {
            State::BpmValue => {
                let empty = self.accumulated_token_ids.is_empty();
                if !self.start_injection("bpm", scores, empty) {
                    whitelist_set(scores, self.tree_allowed(&t.bpm_tree));
                }
            }
            State::CaptionValue => {
                let empty = self.accumulated_value.is_empty();
                if self.start_injection("caption", scores, empty) {
                    return;
                }
                if self.caption_after_newline {
                    let top = argmax(scores); // raw logits of this step, before any mask
                    self.caption_after_newline = false;
                    let first = t.token_text[top].chars().next();
                    if first.is_some_and(|c| c != ' ' && c != '\t') {
                        self.caption_ending = true;
                        self.pending_field_name.clear();
                        return;
                    }
                }
                if self.caption_ending {
                    return;
                }
                if let Some(b) = t.backtick_token {
                    if let Some(v) = scores.get_mut(b as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
                if !t.audio_code_ids.is_empty() {
                    add_mask(scores, |i| t.is_audio_code[i]);
                }
                if self.caption_token_count >= 512 {
                    if let Some(nl) = t.newline_token {
                        whitelist(scores, &[nl]);
                    }
                }
            }
            State::DurationValue => {
                let empty = self.accumulated_token_ids.is_empty();
                if self.start_injection("duration", scores, empty) {
                    return;
                }
                if let Some(target) = self.opts.target_duration {
                    let target = format!("{}", target as i64);
                    let pos = char_len(&self.accumulated_value);
                    if pos < target.len() {
                        let digit = target.as_bytes()[pos].wrapping_sub(b'0') as u32;
                        if let Some(&id) = t.digit_tokens.get(&digit) {
                            whitelist(scores, &[id]);
                        }
                    } else {
                        self.force_newline_or_keep(scores);
                    }
                    return;
                }
                whitelist_set(scores, self.tree_allowed(&t.duration_tree));
            }
            State::GenresValue => {
                let empty = self.accumulated_value.is_empty();
                if self.start_injection("genres", scores, empty) {
                    return;
                }
                let allowed = self.genres_allowed();
                if !allowed.is_empty() {
                    whitelist(scores, &allowed);
                } else {
                    self.force_newline_or_keep(scores);
                }
            }
            State::KeyscaleValue => {
                let empty = self.accumulated_token_ids.is_empty();
                if !self.start_injection("keyscale", scores, empty) {
                    self.tree_step(&t.keyscale_tree, scores);
                }
            }
            State::LanguageValue => {
                let empty = self.accumulated_token_ids.is_empty();
                if self.start_injection("language", scores, empty) {
                    return;
                }
                if empty {
                    match t.language_tree.get(&Vec::new()) {
                        Some(candidates) if !candidates.is_empty() => {
                            // top-1 among the first tokens of every language, even when sampling (first max in
                            // ascending id order on exact ties; Python iterates a set there)
                            let ids: Vec<u32> = candidates.iter().copied().collect();
                            let values: Vec<f32> = ids
                                .iter()
                                .map(|&c| scores.get(c as usize).copied().unwrap_or(f32::NEG_INFINITY))
                                .collect();
                            whitelist(scores, &[ids[argmax(&values)]]);
                        }
                        _ => self.force_newline_or_keep(scores),
                    }
                } else {
                    self.tree_step(&t.language_tree, scores);
                }
            }
            State::TimesigValue => {
                let empty = self.accumulated_token_ids.is_empty();
                if self.start_injection("timesignature", scores, empty) {
                    return;
                }
                let complete = t
                    .timesig_tree
                    .get(&self.accumulated_token_ids)
                    .is_some_and(|s| t.newline_token.is_some_and(|n| s.contains(&n)));
                if complete {
                    self.force_newline_or_keep(scores);
                } else {
                    whitelist_set(scores, self.tree_allowed(&t.timesig_tree));
                }
            }
            _ => {}
        }
    }

    fn tree_allowed<'t>(&self, tree: &'t PrefixTree) -> Option<&'t BTreeSet<u32>> {
        tree.get(&self.accumulated_token_ids)
    }

    /// Keyscale / language after the first token: a complete value forces the newline.
    fn tree_step(&self, tree: &PrefixTree, scores: &mut [f32]) {
        let entry = tree.get(&self.accumulated_token_ids);
        if entry.is_some_and(|s| self.tables.newline_token.is_some_and(|n| s.contains(&n))) {
            self.force_newline_or_keep(scores);
            return;
        }
        match entry {
            Some(s) if !s.is_empty() => whitelist_set(scores, Some(s)),
            _ => self.force_newline_or_keep(scores),
        }
    }

    /// `_get_allowed_genres_tokens` (the caption-matched trie is never built upstream: full trie only).
    fn genres_allowed(&self) -> Vec<u32> {
        let tables = Arc::clone(&self.tables);
        let t = &*tables;
        let nl_list = || truthy(t.newline_token).into_iter().collect::<Vec<_>>();
        let prefix = py_strip(&self.accumulated_value.to_lowercase()).to_string();
        let node = if prefix.is_empty() { Some(0) } else { t.genres_node(&prefix) };
        let Some(node) = node else { return nl_list() };
        let node = &t.genres_trie[node];
        if node.children.is_empty() {
            return if node.end { nl_list() } else { Vec::new() };
        }
        let space_next = node.children.contains_key(&' ') || node.children.contains_key(&',');
        let mut candidates = BTreeSet::new();
        for ch in node.children.keys() {
            if let Some(ids) = t.char_to_tokens.get(&ch.to_string()) {
                candidates.extend(ids.iter().copied());
            }
        }
        let mut allowed = BTreeSet::new();
        for tid in candidates {
            let norm = t.token_to_norm[tid as usize].as_deref().unwrap_or("");
            if norm.is_empty() || py_strip(norm).is_empty() {
                if space_next {
                    allowed.insert(tid);
                }
                continue;
            }
            if t.genres_node(&format!("{prefix}{norm}")).is_some() {
                allowed.insert(tid);
            }
        }
        if node.end {
            if let Some(nl) = truthy(t.newline_token) {
                allowed.insert(nl);
            }
        }
        allowed.into_iter().collect()
    }

    /// `update_state` after a token was chosen.
    pub fn update(&mut self, token_id: u32) -> Result<(), FsmError> {
        let tables = Arc::clone(&self.tables);
        let t = &*tables;
        match self.state {
            State::Completed => return Ok(()),
            State::CodesGeneration => {
                self.codes_count += 1;
                return Ok(());
            }
            _ => {}
        }
        if !self.queue.is_empty() {
            self.queue.remove(0); // upstream only logs a mismatch between the queued and the chosen id
            if self.queue.is_empty() {
                let name = self.current_user_field.take().unwrap_or("");
                self.state = self.next_field_state(name);
                self.reset_field();
            }
            return Ok(());
        }
        let text = t.token_text.get(token_id as usize).ok_or(FsmError::Token(token_id))?.as_str();
        let st = self.state;
        let is_newline = Some(token_id) == t.newline_token;
        if let Some(fixed) = st.fixed_string() {
            self.position_in_state += char_len(text);
            if self.position_in_state >= char_len(fixed) {
                if st == State::ThinkEndTag && self.opts.stop_at_reasoning {
                    self.state = State::Completed;
                    self.reset_field();
                } else {
                    self.transition();
                }
            }
            return Ok(());
        }
        match st {
            State::BpmValue | State::DurationValue | State::TimesigValue => {
                if is_newline {
                    self.transition();
                } else {
                    self.accumulated_token_ids.push(token_id);
                    let stripped = py_strip(text);
                    if py_isdigit(stripped) {
                        self.accumulated_value.push_str(stripped);
                    }
                }
            }
            State::GenresValue => {
                if is_newline {
                    self.transition();
                } else {
                    self.accumulated_value.push_str(text);
                }
            }
            State::CaptionValue => {
                self.caption_token_count += 1;
                self.accumulated_value.push_str(text);
                self.caption_after_newline = text.contains('\n');
                if self.caption_ending {
                    self.pending_field_name.push_str(text);
                    if text.contains(':') {
                        let name = py_strip(py_strip(&self.pending_field_name).trim_end_matches(':')).to_lowercase();
                        self.caption_ending = false;
                        self.pending_field_name.clear();
                        if let Some(target) = State::caption_ending_target(&name) {
                            self.state = target;
                            self.reset_field();
                        } else {
                            self.transition();
                        }
                    }
                }
            }
            State::KeyscaleValue | State::LanguageValue => {
                if is_newline {
                    self.transition();
                } else {
                    self.accumulated_token_ids.push(token_id);
                    self.accumulated_value.push_str(text);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// numpy's `argmax`: the first maximum (a NaN wins, as numpy returns the first NaN).
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in scores.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v > scores[best] {
            best = i;
        }
    }
    best
}

/// `_apply_whitelist_inplace`: allowed ids keep their values, everything else is -inf.
fn whitelist(scores: &mut [f32], allowed: &[u32]) {
    let keep: Vec<(usize, f32)> =
        allowed.iter().filter_map(|&i| scores.get(i as usize).map(|v| (i as usize, *v))).collect();
    scores.fill(f32::NEG_INFINITY);
    for (i, v) in keep {
        scores[i] = v;
    }
}

fn whitelist_set(scores: &mut [f32], allowed: Option<&BTreeSet<u32>>) {
    let ids: Vec<u32> = allowed.map(|s| s.iter().copied().collect()).unwrap_or_default();
    whitelist(scores, &ids);
}

/// numpy `scores + mask` with a 0 / -inf mask: masked ids become -inf, the others get `+ 0.0` (which turns -0.0
/// into +0.0, as numpy does).
fn add_mask(scores: &mut [f32], masked: impl Fn(usize) -> bool) {
    for (i, v) in scores.iter_mut().enumerate() {
        *v = if masked(i) { *v + f32::NEG_INFINITY } else { *v + 0.0 };
    }
}
