//! The lab: real servers and clients on loopback for sluice's tests and demonstrations.
//! Every server binds an ephemeral port, counts what it served and can be stopped and
//! started again on the same port, so tests can kill a server under sluice.

pub mod backend;
pub mod bodies;
pub mod certs;
pub mod client;
pub mod conn_auth;
pub mod raw;
pub mod tcp;

pub use backend::Backend;
pub use certs::TestCert;
pub use client::Client;
pub use tcp::{Mail, TcpServer};
