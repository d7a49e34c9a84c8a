//! How an event reads in a notification: subject line, text body, JSON document. Shared
//! by the SNS, mail and webhook sinks so that every channel says the same thing.

use baton_core::Event;
use serde_json::{json, Value};

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "Baton";

/// How many times a delivered event stands for (repeats folded by the notifier's
/// coalescing; 1 when none).
pub fn occurrences(ev: &Event) -> u64 {
    ev.fields
        .get("occurrences")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1)
}

/// `DOCS_URL#btn-2107`, when a docs address is configured.
pub fn docs_link(docs_url: Option<&str>, ev: &Event) -> Option<String> {
    docs_url.map(|u| format!("{}#{}", u.trim_end_matches('#'), ev.id.to_lowercase()))
}

/// UTC time in RFC 3339 with milliseconds (`2024-05-01T12:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// One-line subject: `PREFIX CLUSTER/SERVER BTN-2107 warning: TEXT (xN)`, printable
/// ASCII only (SNS and mail headers), at most `max` characters.
pub fn subject(prefix: &str, ev: &Event, max: usize) -> String {
    let n = occurrences(ev);
    let mut s = format!(
        "{} {}/{} {} {}: {}",
        if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        },
        ev.cluster,
        ev.server,
        ev.id,
        ev.severity,
        ev.message
    );
    if n > 1 {
        s.push_str(&format!(" (x{n})"));
    }
    truncate_ascii(&s, max)
}

/// Printable ASCII (others become `?`, line breaks a space), cut to `max` characters
/// with `...` when longer.
pub fn truncate_ascii(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect();
    if clean.len() <= max {
        return clean;
    }
    let keep = max.saturating_sub(3);
    format!("{}...", &clean[..keep])
}

/// The plain-text body of one event (mail, SNS email / SMS subscribers).
pub fn text(ev: &Event, docs_url: Option<&str>) -> String {
    let mut s = format!("{} ({}) {}\n\n", ev.id, ev.severity, ev.message);
    let mut row = |k: &str, v: &str| s.push_str(&format!("{k:<9} {v}\n"));
    row("cluster:", &ev.cluster);
    row("server:", &ev.server);
    row("module:", &ev.module);
    if let Some(g) = &ev.group {
        row("group:", g);
    }
    if let Some(r) = &ev.resource {
        row("resource:", r);
    }
    if let Some(m) = &ev.monitor {
        row("monitor:", m);
    }
    if let Some(p) = &ev.peer {
        row("peer:", p);
    }
    if let Some(e) = ev.epoch {
        row("epoch:", &e.to_string());
    }
    row("time:", &rfc3339(ev.time_ms));
    row("seq:", &ev.seq.to_string());
    let n = occurrences(ev);
    if n > 1 {
        let last = ev
            .fields
            .get("last_time_ms")
            .and_then(Value::as_u64)
            .map(rfc3339)
            .unwrap_or_default();
        row("repeated:", &format!("{n} times, the last at {last}"));
    }
    for (k, v) in &ev.fields {
        if matches!(k.as_str(), "occurrences" | "last_seq" | "last_time_ms") {
            continue;
        }
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        row(&format!("{k}:"), &v);
    }
    match docs_link(docs_url, ev) {
        Some(l) => s.push_str(&format!("\nWhat it means and what to do: {l}\n")),
        None => s.push_str(&format!(
            "\nWhat it means and what to do: `baton events` or the Events page of the Baton documentation ({}).\n",
            ev.id
        )),
    }
    s
}

/// One line for chat messages: `*BTN-2107* warning node-2: group web fails over (x3)`.
pub fn chat_line(ev: &Event) -> String {
    let n = occurrences(ev);
    format!(
        "*{}* {} {}/{}: {}{}",
        ev.id,
        ev.severity,
        ev.cluster,
        ev.server,
        ev.message,
        if n > 1 {
            format!(" (x{n})")
        } else {
            String::new()
        }
    )
}

/// The event as a JSON document for machine subscribers (SNS to SQS / Lambda / HTTPS,
/// webhooks): every event field, plus `line`, `time`, `occurrences` and `docs_url`.
pub fn event_json(ev: &Event, docs_url: Option<&str>) -> Value {
    let mut v = serde_json::to_value(ev).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("line".into(), Value::String(ev.line()));
        m.insert("time".into(), Value::String(rfc3339(ev.time_ms)));
        m.insert("occurrences".into(), Value::from(occurrences(ev)));
        if let Some(l) = docs_link(docs_url, ev) {
            m.insert("docs_url".into(), Value::String(l));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::events::GROUP_FAILOVER;

    fn ev() -> Event {
        let mut e = Event::new(
            &GROUP_FAILOVER,
            "group web fails over from node-1 to node-2",
        )
        .group("web")
        .peer("node-1")
        .epoch(4);
        e.cluster = "prod".into();
        e.server = "node-2".into();
        e.time_ms = 1_714_564_800_123;
        e.seq = 9;
        e
    }

    #[test]
    fn time_is_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn subject_is_ascii_and_bounded() {
        let mut e = ev();
        assert_eq!(
            subject("Baton", &e, 100),
            "Baton prod/node-2 BTN-2107 warning: group web fails over from node-1 to node-2"
        );
        e.message = "é\nline".repeat(40);
        let s = subject("", &e, 100);
        assert_eq!(s.len(), 100);
        assert!(s.ends_with("..."));
        assert!(s.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        e.fields.insert("occurrences".into(), 3.into());
        assert!(subject("B", &ev_with_count(3), 100).ends_with("(x3)"));
    }

    fn ev_with_count(n: u64) -> Event {
        let mut e = ev();
        e.fields.insert("occurrences".into(), n.into());
        e.fields
            .insert("last_time_ms".into(), (e.time_ms + 5000).into());
        e
    }

    #[test]
    fn text_and_json_carry_the_subject_fields_and_the_docs_link() {
        let e = ev_with_count(4);
        let t = text(&e, Some("https://docs.example.com/events.html"));
        assert!(
            t.starts_with("BTN-2107 (warning) group web fails over"),
            "{t}"
        );
        assert!(t.contains("group:    web\n"), "{t}");
        assert!(t.contains("peer:     node-1\n"), "{t}");
        assert!(t.contains("repeated: 4 times, the last at 2024-05-01T12:00:05.123Z"));
        assert!(t.contains("https://docs.example.com/events.html#btn-2107"));
        let j = event_json(&e, None);
        assert_eq!(j["id"], "BTN-2107");
        assert_eq!(j["occurrences"], 4);
        assert_eq!(j["group"], "web");
        assert_eq!(j["time"], "2024-05-01T12:00:00.123Z");
        assert!(j.get("docs_url").is_none());
        assert_eq!(
            chat_line(&e),
            "*BTN-2107* warning prod/node-2: group web fails over from node-1 to node-2 (x4)"
        );
    }
}
