//! Amazon Web Services: the client factory shared by every AWS caller, and (issue 4) the
//! AWS resources and monitors.

pub mod client;
pub mod witness;

pub use client::{call, classify, AwsClients, AwsFailure};
