//! The Baton node agent: heartbeats, resource and monitor execution, state directory,
//! HTTP API, operator CLI and the demo. Decisions are made by `baton_core::engine`.
#![forbid(unsafe_code)]

pub mod api;
pub mod api_types;
pub mod args;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cloud;
pub mod config_push;
pub mod demo;
pub mod exit;
pub mod files;
pub mod health;
pub mod key;
pub mod listen;
pub mod logbuf;
pub mod mirror_cmd;
pub mod mirror_kind;
pub mod notify_cmd;
pub mod persist;
pub mod reach;
pub mod runtime;
pub mod rxstamp;
pub mod shared;
pub mod state;
pub mod status_view;
pub mod support_bundle;
pub mod tls;
pub mod tokens;
pub mod web;
pub mod wire;
pub mod witness;
