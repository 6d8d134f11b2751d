//! Starting sluice from configuration text, and waiting for things with a bound.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use sluice_proxy::{AccessLog, Proxy};

pub struct Lb {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    pub log: Receiver<String>,
}

/// Starts sluice on `config` (relative paths resolve against `dir`); its first service
/// must be called "web".
pub async fn start_in(config: &str, dir: &Path) -> Lb {
    let config = sluice_config::parse(config, "test.toml", dir).unwrap_or_else(|e| panic!("{e}"));
    let (log, rx) = AccessLog::channel(100_000);
    let proxy = Proxy::start(config, log).await.expect("sluice starts");
    let addr = proxy.local_addrs("web")[0];
    Lb {
        proxy,
        addr,
        log: rx,
    }
}

pub async fn start(config: &str) -> Lb {
    start_in(config, Path::new(".")).await
}

impl Lb {
    /// Access log lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    pub fn is_up(&self, pool: &str, server: &str) -> bool {
        self.proxy
            .server_status()
            .iter()
            .any(|s| s.pool == pool && s.server == server && s.up)
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns how long it took.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Reads until the peer closes the connection; fails the test if it is still open after
/// 5 s or the read fails.
pub async fn read_until_closed(c: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("the connection is closed within 5 s")
        .expect("the connection closes cleanly");
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `raw` on a new connection and returns the answer, read until the balancer
/// closes the connection (see [`read_until_closed`]).
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(raw).await.unwrap();
    read_until_closed(&mut c).await
}

/// A `[[pool]]` with the given name and servers.
pub fn pool(name: &str, servers: &[(&str, SocketAddr)], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", address = \"{a}\" }}"))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A `[[service]]` called "web" on an ephemeral port.
pub fn service(default_pool: &str, extra: &str) -> String {
    format!("[[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"{default_pool}\"\n{extra}\n")
}

/// [`service`] for pool "p" terminating TLS with one certificate, `<cert>.pem` and
/// `<cert>.key` beside the configuration; `tls_extra` goes in `[service.tls]`.
pub fn service_with_tls(cert: &str, extra: &str, tls_extra: &str) -> String {
    let tls = format!(
        "{extra}\n[service.tls]\ncertificates = [{{ cert = \"{cert}.pem\", key = \"{cert}.key\" }}]\n{tls_extra}"
    );
    service("p", &tls)
}
