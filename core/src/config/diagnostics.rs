//! Diagnostics: what a problem in the file looks like ([`Diagnostic`], [`ConfigError`]),
//! the [`Diags`] collector the validators report to, locating a key's line and column in
//! the source text, and turning serde's and the TOML parser's messages into advice (with
//! "did you mean" for misspelt keys).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `group[0].resource[1].depends_on`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lvl = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {lvl}", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, " at `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The configuration could not be loaded; `diagnostics` has at least one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} in {file}", summary(.diagnostics))]
pub struct ConfigError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

fn summary(d: &[Diagnostic]) -> String {
    let n = d.iter().filter(|d| d.level == Level::Error).count();
    if n == 1 {
        "1 configuration error".to_string()
    } else {
        format!("{n} configuration errors")
    }
}

impl ConfigError {
    /// Stable code for the API and CLI.
    pub fn code(&self) -> &'static str {
        "config-invalid"
    }
}

// ---------------------------------------------------------------------------------------
// Key paths and the collector
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) type KeyPath = Vec<Seg>;

pub(super) fn path_string(p: &[Seg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                if k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    s.push_str(k);
                } else {
                    s.push_str(&format!("\"{k}\""));
                }
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub(super) fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

pub(super) struct Diags<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) doc: Option<toml_edit::ImDocument<&'a str>>,
    pub(super) out: Vec<Diagnostic>,
}

impl Diags<'_> {
    fn push(&mut self, level: Level, path: &[Seg], message: impl Into<String>) {
        let offset = self.doc.as_ref().and_then(|d| locate(d, path)).unwrap_or(0);
        let (line, column) = line_col(self.text, offset);
        self.out.push(Diagnostic {
            level,
            file: self.file.to_string(),
            line,
            column,
            key: escape_controls(&path_string(path)),
            message: escape_controls(&message.into()),
        });
    }
    pub(super) fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        self.push(Level::Error, path, message)
    }
    pub(super) fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        self.push(Level::Warning, path, message)
    }
    pub(super) fn has_errors(&self) -> bool {
        self.out.iter().any(|d| d.level == Level::Error)
    }
}

// ---------------------------------------------------------------------------------------
// Positions and text of a diagnostic
// ---------------------------------------------------------------------------------------

/// Messages quote values from the file; keep a diagnostic on one line and free of
/// terminal control characters (`name = "a\nb"` is shown as `a\nb`).
pub(super) fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of the best location for `path`: the key itself if present, otherwise the
/// closest enclosing table or value.
fn locate(doc: &toml_edit::ImDocument<&str>, path: &[Seg]) -> Option<usize> {
    locate_in_table(doc.as_table(), path, None)
}

fn locate_in_table(t: &toml_edit::Table, rest: &[Seg], mut best: Option<usize>) -> Option<usize> {
    let Some((first, tail)) = rest.split_first() else {
        return best;
    };
    let Seg::Key(key) = first else {
        return best;
    };
    if let Some(span) = t.key(key).and_then(|kk| kk.span()) {
        best = Some(span.start);
    }
    let Some(item) = t.get(key) else {
        return best;
    };
    match item {
        toml_edit::Item::Table(sub) => {
            if t.key(key).and_then(|kk| kk.span()).is_none() {
                if let Some(sp) = sub.span() {
                    best = Some(sp.start);
                }
            }
            locate_in_table(sub, tail, best)
        }
        toml_edit::Item::ArrayOfTables(a) => match tail.split_first() {
            Some((Seg::Index(i), tail2)) => match a.get(*i) {
                Some(sub) => {
                    if let Some(sp) = sub.span() {
                        best = Some(sp.start);
                    }
                    locate_in_table(sub, tail2, best)
                }
                None => best,
            },
            _ => best,
        },
        toml_edit::Item::Value(v) => locate_in_value(v, tail, best),
        toml_edit::Item::None => best,
    }
}

fn locate_in_value(v: &toml_edit::Value, rest: &[Seg], mut best: Option<usize>) -> Option<usize> {
    let Some((first, tail)) = rest.split_first() else {
        return best;
    };
    match (v, first) {
        (toml_edit::Value::InlineTable(t), Seg::Key(key)) => {
            if let Some(span) = t.key(key).and_then(|kk| kk.span()) {
                best = Some(span.start);
            }
            match t.get(key) {
                Some(sub) => locate_in_value(sub, tail, best),
                None => best,
            }
        }
        (toml_edit::Value::Array(a), Seg::Index(i)) => match a.get(*i) {
            Some(sub) => {
                if let Some(sp) = sub.span() {
                    best = Some(sp.start);
                }
                locate_in_value(sub, tail, best)
            }
            None => best,
        },
        _ => best,
    }
}

// ---------------------------------------------------------------------------------------
// Humanising serde and parser messages
// ---------------------------------------------------------------------------------------

/// Deserialize `value` as `T`, turning a failure into a diagnostic at the failing key.
pub(super) fn typed<T: DeserializeOwned>(
    d: &mut Diags<'_>,
    base: &[Seg],
    value: toml::Value,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path: KeyPath = base.to_vec();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            // toml appends "\nin `key`" lines; the diagnostic names the key already.
            let raw = e.inner().to_string();
            let raw = raw.lines().next().unwrap_or_default().trim_end();
            let message = humanize_serde(raw, &mut path);
            d.err(&path, message);
            None
        }
    }
}

/// Make serde's messages read like advice, and point unknown keys at themselves.
fn humanize_serde(raw: &str, path: &mut KeyPath) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            // serde_path_to_error already ends the path with the unknown key.
            if path.last() != Some(&Seg::Key(field.to_string())) {
                path.push(Seg::Key(field.to_string()));
            }
            // serde writes "`a`", "`a` or `b`", or "one of `a`, `b`, `c`".
            let expected = tail
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace("` or `", "`, `")
                .replace('`', "");
            let expected = if expected.starts_with("there are no fields") {
                "this table takes no keys".to_string()
            } else {
                format!("known keys here: {expected}")
            };
            let hint = suggest(field, &expected);
            return format!("unknown key `{field}`{hint}; {expected}");
        }
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return format!("missing required key `{field}`");
        }
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        if let Some((v, tail)) = rest.split_once('`') {
            let expected = tail
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", expected ")
                .replace('`', "");
            return format!("unknown value `{v}`; expected one of: {expected}");
        }
    }
    plain_expected(&raw.replace("invalid type: ", "wrong type: found "))
}

/// Say what serde expected in TOML's words, not Rust's (`u32`, `sequence`, `struct X`).
fn plain_expected(msg: &str) -> String {
    let Some((head, expected)) = msg.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    // toml's words for a non-string where a keyword (enum value) is expected.
    if expected == "string only" {
        return "wrong type: expected a string".to_string();
    }
    let plain = match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" => "a whole number from 0 to 4294967295".to_string(),
        "u64" | "usize" => "a whole number, 0 or more".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e if e.starts_with("internally tagged enum ") => {
            "a table with a `kind` key, like { kind = \"...\", ... }".to_string()
        }
        e => e.to_string(),
    };
    format!("{head}, expected {plain}")
}

fn suggest(word: &str, expected: &str) -> String {
    let known = expected.trim_start_matches("known keys here: ").split(", ");
    match crate::suggest::closest(word, known) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}
/// Parser messages may span lines ("invalid table header\nexpected `.`, `]`"); a
/// diagnostic is one line.
pub(super) fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------
// The error of a file that does not load
// ---------------------------------------------------------------------------------------

/// Errors first (in the order found), then warnings.
pub(super) fn finish_err(d: Diags<'_>) -> ConfigError {
    let (mut errors, warnings): (Vec<_>, Vec<_>) =
        d.out.into_iter().partition(|x| x.level == Level::Error);
    errors.extend(warnings);
    ConfigError {
        file: d.file.to_string(),
        diagnostics: errors,
    }
}
