//! sluice's configuration: the TOML file model turned once into a validated, typed
//! [`Config`]. Every problem in a file is reported at once, each with its file, line,
//! column and key path, so an operator fixes them in one pass.
//!
//! This crate does no I/O beyond reading the files the configuration names.

mod admin;
mod document;
mod error;
mod model;
mod persistence;
mod pool;
mod reader;
mod rules;
mod service;

pub use document::{load, parse};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use pool::parse_sha256;
