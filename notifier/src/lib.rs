//! Event sinks. The agent records every event in the local alert log (the source of
//! truth) and hands it to the notifier, which fans it out to sinks through a bounded
//! queue that never blocks the caller.
#![forbid(unsafe_code)]
