//! Turning a kind's config table into its typed params, with errors a person can act on.
//!
//! Every kind's params struct derives `Deserialize` with `#[serde(deny_unknown_fields)]`
//! and is read with [`parse_params`], which reports the dotted path of the failing key
//! (`start`, `expect.status`) and rewrites serde's messages into plain English.

use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use crate::{ParamError, Params};

/// Parse a duration written as a number and a unit: `200ms`, `5s`, `2m`, `1h`
/// (combinations such as `1m30s` work too).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad =
        || format!("invalid duration '{s}': use a number and a unit, like 200ms, 5s, 2m or 1h");
    // humantime accepts "5 sec"; we want one spelling per value so configs stay greppable.
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(bad());
    }
    humantime::parse_duration(t).map_err(|_| bad())
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration string with a unit, like \"200ms\", \"5s\", \"2m\" or \"1h\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {v}: a duration needs a unit, write it as a string like \"{v}s\" or \"{v}ms\""
        )))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "invalid duration {v}: a duration needs a unit, write it as a string like \"{v}s\" or \"{v}ms\""
        )))
    }
}

/// `#[serde(deserialize_with = "crate::params::duration")]` for a [`Duration`] field.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// `#[serde(default, deserialize_with = "crate::params::option_duration")]` for an
/// `Option<Duration>` field.
pub fn option_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor).map(Some)
}

/// Deserialize a kind's params table into its struct. On error, `key` is the dotted
/// path of the offending key relative to the table.
pub fn parse_params<T: DeserializeOwned>(params: &Params) -> Result<T, ParamError> {
    let value = toml::Value::Table(params.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = path_string(e.path());
        let inner = e.into_inner();
        humanize(path, inner.message())
    })
}

fn path_string(path: &serde_path_to_error::Path) -> Option<String> {
    let s = path.to_string();
    if s.is_empty() || s == "." || s == "?" {
        None
    } else {
        Some(s)
    }
}

fn join(path: Option<&str>, key: &str) -> String {
    match path {
        Some(p) if p == key || p.ends_with(&format!(".{key}")) => p.to_string(),
        Some(p) => format!("{p}.{key}"),
        None => key.to_string(),
    }
}

/// The backtick-quoted words of a serde message, in order.
fn quoted(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

/// Rewrite serde's messages ("unknown field `x`, expected one of ...") in plain English.
fn humanize(path: Option<String>, msg: &str) -> ParamError {
    let words = quoted(msg);
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let field = words.first().copied().unwrap_or(rest);
        let known: Vec<&str> = words.iter().skip(1).copied().collect();
        let parent = match &path {
            // The path may or may not already name the unknown key itself.
            Some(p) if p == field => None,
            Some(p) => p.strip_suffix(&format!(".{field}")).or(Some(p.as_str())),
            None => None,
        };
        let mut message = format!("unknown key `{field}`");
        if let Some(best) = closest(field, &known) {
            message.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if known.is_empty() {
            message.push_str("; this table takes no keys");
        } else {
            message.push_str(&format!("; expected one of {}", known.join(", ")));
        }
        return ParamError::new(Some(join(parent, field)), message);
    }
    if msg.starts_with("missing field ") {
        if let Some(field) = words.first() {
            return ParamError::new(
                Some(join(path.as_deref(), field)),
                format!("missing required key `{field}`"),
            );
        }
    }
    if msg.starts_with("unknown variant ") {
        if let Some((value, known)) = words.split_first() {
            return ParamError::new(
                path,
                format!(
                    "unknown value `{value}`; expected one of {}",
                    known.join(", ")
                ),
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        return ParamError::new(path, format!("wrong type: got {}", plain_types(rest)));
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        return ParamError::new(path, format!("invalid value: {}", plain_types(rest)));
    }
    ParamError::new(path, msg.to_string())
}

/// Replace Rust type names at the end of a serde message with TOML words.
fn plain_types(msg: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a non-negative whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected a list"),
    ];
    for (rust, toml) in WORDS {
        if let Some(head) = msg.strip_suffix(rust) {
            return format!("{head}{toml}");
        }
    }
    msg.to_string()
}

/// The known name closest to a misspelt one, when it is close enough to be a typo.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    baton_core::suggest::closest(word, known.iter().copied())
}

/// A [`ParamError`] for one key.
pub(crate) fn key_error(key: &str, message: impl Into<String>) -> ParamError {
    ParamError::new(Some(key.to_string()), message)
}

/// Check that a command line is not blank.
pub(crate) fn non_blank(key: &str, value: &str) -> Result<(), ParamError> {
    if value.trim().is_empty() {
        Err(key_error(key, format!("`{key}` must not be empty")))
    } else {
        Ok(())
    }
}

/// Check the names of an `env` table.
pub(crate) fn check_env(
    key: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ParamError> {
    for (name, value) in env {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(key_error(
                &format!("{key}.{name}"),
                format!(
                    "invalid environment variable name `{name}`: use letters, digits and _, not starting with a digit"
                ),
            ));
        }
        if value.contains('\0') {
            return Err(key_error(
                &format!("{key}.{name}"),
                "environment values cannot contain NUL characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        status: u16,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        start: String,
        stop: Option<String>,
        #[serde(default, deserialize_with = "option_duration")]
        every: Option<Duration>,
        expect: Option<Inner>,
    }

    fn table(s: &str) -> Params {
        s.parse::<toml::Table>().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("5 sec").unwrap_err(),
            "invalid duration '5 sec': use a number and a unit, like 200ms, 5s, 2m or 1h"
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn unknown_key() {
        let e = parse_params::<Demo>(&table("strat = 'x'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("strat"));
        assert_eq!(
            e.message,
            "unknown key `strat` (did you mean `start`?); expected one of start, stop, every, expect"
        );
    }

    #[test]
    fn nested_paths() {
        let e = parse_params::<Demo>(&table("start = 'x'\n[expect]\nstatus = 'no'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("expect.status"));
        assert!(
            e.message.starts_with("wrong type: got string"),
            "{}",
            e.message
        );

        let e = parse_params::<Demo>(&table("start = 'x'\n[expect]\nstatsu = 1")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("expect.statsu"));
        assert!(
            e.message.starts_with("unknown key `statsu`"),
            "{}",
            e.message
        );

        let e = parse_params::<Demo>(&table("start = 'x'\n[expect]")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("expect.status"));
        assert_eq!(e.message, "missing required key `status`");
    }

    #[test]
    fn missing_key() {
        let e = parse_params::<Demo>(&table("stop = 'x'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("start"));
        assert_eq!(e.message, "missing required key `start`");
    }

    #[test]
    fn bad_duration() {
        let e = parse_params::<Demo>(&table("start = 'x'\nevery = '5 sec'")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("every"));
        assert_eq!(
            e.message,
            "invalid duration '5 sec': use a number and a unit, like 200ms, 5s, 2m or 1h"
        );
        let e = parse_params::<Demo>(&table("start = 'x'\nevery = 5")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("every"));
        assert!(e.message.contains("\"5s\""), "{}", e.message);
        let ok = parse_params::<Demo>(&table("start = 'x'\nevery = '250ms'")).unwrap();
        assert_eq!(ok.every, Some(Duration::from_millis(250)));
    }

    #[test]
    fn env_names() {
        let mut env = std::collections::BTreeMap::new();
        env.insert("GOOD_1".to_string(), "v".to_string());
        assert!(check_env("env", &env).is_ok());
        env.insert("1BAD".to_string(), "v".to_string());
        assert_eq!(
            check_env("env", &env).unwrap_err().key.as_deref(),
            Some("env.1BAD")
        );
    }

    #[test]
    fn distance() {
        assert_eq!(closest("strat", &["start", "stop"]), Some("start"));
        assert_eq!(closest("zzzzzz", &["start", "stop"]), None);
    }
}
