//! Baton's core: the configuration model, the decision engine and the event catalogue.
//!
//! Nothing here does I/O or reads a clock: the agent shell in `node-agent` feeds the
//! engine inputs stamped with its own monotonic time and executes the actions it returns.
#![forbid(unsafe_code)]

pub mod bounds;
pub mod config;
pub mod engine;
pub mod events;
pub mod heartbeat;
pub mod marks;
pub mod suggest;
pub mod time;

pub use events::{Event, EventDef, Severity};
