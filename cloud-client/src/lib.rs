//! Cloud client factories: one module per cloud with the one place its SDK clients are
//! configured (credentials, region, endpoint, timeouts, retries), its failures
//! classified and its calls bounded by their deadlines. The providers (resources,
//! monitors, witnesses) and the notifier's sinks use them. [`azure`] and [`gcp`] are shaped
//! like [`aws`] (with typed REST calls instead of an SDK). The lowest crate every runtime crate
//! depends on, it also holds the one [`clock`].
#![forbid(unsafe_code)]

pub mod aws;
pub mod azure;
pub mod clock;
pub mod gcp;
mod retry;

/// The text of an unanswered call: `OP: CODE (HTTP STATUS): MESSAGE` when the API answered
/// with an error code (the status and message when known), else `OP: MESSAGE`.
pub fn unanswered(
    operation: &str,
    code: Option<&str>,
    status: Option<u16>,
    message: &str,
) -> String {
    match code {
        None => format!("{operation}: {message}"),
        Some(code) => format!(
            "{operation}: {code}{}{}",
            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ),
    }
}
