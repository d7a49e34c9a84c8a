//! The retry loop of the REST clients (Azure, Google Cloud): attempts until one is done or
//! the deadline comes, pausing for the answer's `Retry-After` or a jittered exponential
//! backoff; a pause longer than the time left ends the call at once with the last failure.

use std::future::Future;
use std::time::Duration;

use crate::clock::{self, Instant};

/// First backoff pause when an answer names none; doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one attempt of a retried exchange gave.
pub(crate) enum Attempt<T, E> {
    Done(Result<T, E>),
    Retry { failure: E, after: Option<Duration> },
}

/// What the loop needs of a client's failure type.
pub(crate) trait RetryFailure: Sized {
    /// The call had no time left to try (again).
    fn out_of_time(operation: &str) -> Self;
    /// The same failure with `note` added to its message (where it has one).
    fn with_note(self, note: &str) -> Self;
}

/// Run attempts until one is done, or time runs out (the last failure then).
pub(crate) async fn retrying<T, E, F, Fut>(
    operation: &str,
    end: Instant,
    mut attempt: F,
) -> Result<T, E>
where
    E: RetryFailure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    loop {
        if clock::now() >= end {
            return Err(E::out_of_time(operation));
        }
        tries += 1;
        let (failure, after) = match attempt().await {
            Attempt::Done(r) => return r,
            Attempt::Retry { failure, after } => (failure, after),
        };
        let pause = after.unwrap_or_else(|| jitter(backoff));
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let left = end.saturating_duration_since(clock::now());
        if pause >= left {
            return Err(failure.with_note(&format!(
                "gave up after {tries} attempt(s): the deadline comes first"
            )));
        }
        tokio::time::sleep(pause).await;
    }
}

/// `message (note)`, or the note alone for an empty message.
pub(crate) fn noted(message: String, note: &str) -> String {
    if message.is_empty() {
        note.to_string()
    } else {
        format!("{message} ({note})")
    }
}

/// Full jitter: a random pause between half of `d` and `d`.
pub(crate) fn jitter(d: Duration) -> Duration {
    use rand::Rng as _;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}
