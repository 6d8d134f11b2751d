//! sluice's data plane: listeners, TLS termination, routing, balancing, health probing
//! and streaming relay to pools of HTTP/1.1 servers.
//!
//! [`Proxy::start`] binds everything a configuration asks for and returns a handle that
//! reports the bound addresses and shuts the whole thing down gracefully. Connections read
//! an immutable [`state::Snapshot`] taken when they are accepted.

mod access_log;
mod body;
mod conn_io;
mod control;
mod error;
mod expect;
pub mod fd_limit;
mod forward;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod headers;
pub mod l4;
mod listener;
mod local;
mod metrics;
mod persistence;
mod pinning;
mod probe;
mod request;
mod routing;
mod rules;
mod server;
mod state;
mod status;
mod stream;
mod sync;
pub mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_config::Config;
use tokio_util::sync::CancellationToken;

pub use access_log::{AccessLog, Record};
pub use control::{Control, ControlError};
pub use error::ProxyError;
pub use metrics::Metrics;
pub use server::Mode;
pub use status::{
    CheckStatus, PoolStatus, ReloadOutcome, Reloads, RouteStatus, ServerStatus, ServiceStatus,
    Status,
};

/// Why sluice could not start; each names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {service}: cannot listen on {addr}: {source}")]
    Listen {
        service: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] tls::TlsFileError),
}

/// A running proxy.
pub struct Proxy {
    control: Arc<Control>,
    shutdown: CancellationToken,
}

impl Proxy {
    /// Binds every listener, starts health checks and begins accepting. Must run inside a
    /// tokio runtime.
    pub async fn start(config: Config, log: AccessLog) -> Result<Proxy, StartError> {
        let shutdown = CancellationToken::new();
        let control = Control::start(config, log, shutdown.clone())?;
        Ok(Proxy { control, shutdown })
    }

    /// The control plane: status, drain, weights, reload, metrics.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The addresses actually bound (useful with port 0), by service name.
    pub fn local_addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.control.local_addrs(service)
    }

    /// Every server of every pool, in configuration order.
    pub fn server_status(&self) -> Vec<ServerStatus> {
        self.control
            .snapshot()
            .pool_status()
            .into_iter()
            .flat_map(|p| p.servers)
            .collect()
    }

    /// Live stick table entries per pool with source or header persistence.
    pub fn persistence_entries(&self) -> Vec<(String, usize)> {
        self.control
            .snapshot()
            .pool_status()
            .into_iter()
            .filter_map(|p| Some((p.name, p.stick_entries?)))
            .collect()
    }

    /// Open client connections.
    pub fn open_connections(&self) -> usize {
        self.control.tracker().open()
    }

    /// Stops accepting, asks every connection to finish its request in progress, and
    /// waits up to `grace` for them. Returns whether all finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.control.stop();
        tokio::time::timeout(grace, self.control.tracker().wait_idle())
            .await
            .is_ok()
    }
}
