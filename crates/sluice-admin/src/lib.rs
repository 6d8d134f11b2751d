//! The admin listener: a JSON API under `/api/v1/`, Prometheus text at `/metrics` and
//! the dashboard at `/`. It runs on its own thread and runtime, so a busy data plane
//! never starves the operator, and reaches the proxy only through its control plane.
//!
//! Reads are open to loopback clients; every change, and any read from elsewhere, needs
//! `Authorization: Bearer <token>` with the configuration's admin token.

mod api;
mod auth;
mod server;

pub use server::AdminServer;
