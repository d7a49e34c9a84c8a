//! Durations: written as a string with a unit (`200ms`, `5s`, `1h30m`), at most 7 days.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written as a string with a unit: `200ms`, `5s`, `2m`, `1h`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    pub fn from_ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration any key accepts: 7 days. Keys that bound the agent's reactions
/// (heartbeat, fencing, shutdown, monitors, actions) have tighter limits, checked in
/// validation; this one keeps every sum and product of durations far from overflow (a
/// deadline `now + d` never overflows a monotonic clock).
pub const MAX_DURATION: Dur = Dur(Duration::from_secs(7 * 24 * 3600));

/// Parse a duration string; the error is written for a person.
pub fn parse_duration(s: &str) -> Result<Dur, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: use a number and a unit, like 200ms, 5s, 2m or 1h".into());
    }
    let d = humantime::parse_duration(t).map(Dur).map_err(|_| {
        format!("invalid duration '{s}': use a number and a unit, like 200ms, 5s, 2m or 1h")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration '{t}' is too long: durations are at most 7 days (7d)"
        ));
    }
    Ok(d)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"200ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\" (with quotes)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
