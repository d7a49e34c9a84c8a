//! Harness for the integration tests.
