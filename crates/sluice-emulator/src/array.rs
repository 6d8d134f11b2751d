//! A Client Access array: several emulated servers sharing a mailbox store and, like
//! servers sharing one certificate, a cookie sealing key.

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_exchange::Version;

use crate::seal::{hex, SealKey};
use crate::server::{ExchangeServer, ServerSpec, Timings};
use crate::state::Mailboxes;

#[derive(Debug, Clone)]
pub struct ArrayOptions {
    /// One server per entry, named `EX1`, `EX2`, ...
    pub versions: Vec<Version>,
    pub timings: Timings,
    /// Servers listen on this port and the following ones, their admin endpoints from
    /// this port + 100; `None`: any free ports.
    pub first_port: Option<u16>,
    pub tls: bool,
}

impl ArrayOptions {
    pub fn new(versions: &[Version]) -> ArrayOptions {
        ArrayOptions {
            versions: versions.to_vec(),
            timings: Timings::quick(),
            first_port: None,
            tls: true,
        }
    }
}

pub struct Array {
    pub servers: Vec<ExchangeServer>,
}

impl Array {
    pub fn start(options: &ArrayOptions) -> std::io::Result<Array> {
        let key = SealKey::generate();
        let mailboxes = Arc::new(Mailboxes::default());
        let at = |offset: usize| {
            let port = options.first_port.map_or(0, |p| p + offset as u16);
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let servers = options
            .versions
            .iter()
            .enumerate()
            .map(|(i, &version)| {
                let spec = ServerSpec {
                    name: format!("EX{}", i + 1),
                    version,
                    tls: options.tls,
                    seal_key: key.clone(),
                    timings: options.timings,
                    addr: at(i),
                    admin_addr: at(100 + i),
                };
                ExchangeServer::start(spec, mailboxes.clone())
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Array { servers })
    }

    pub fn server(&self, name: &str) -> Option<&ExchangeServer> {
        self.servers.iter().find(|s| s.name() == name)
    }

    /// The lowest version in the array: what a configuration for all of them must fit.
    pub fn oldest(&self) -> Version {
        self.servers
            .iter()
            .map(|s| s.version())
            .min()
            .unwrap_or(Version::V2019)
    }

    /// SHA-256 fingerprints (hex) of the servers' certificates.
    pub fn fingerprints(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter_map(|s| s.certificate())
            .map(|c| hex(ring::digest::digest(&ring::digest::SHA256, &c.der).as_ref()))
            .collect()
    }
}
