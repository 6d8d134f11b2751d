//! The layer 4 data plane (`mode = "tcp"`): route a client connection (by the TLS server
//! name it asks for, without decrypting, and by its address), choose a server with the
//! pool's algorithm, persistence, health and drain state, connect (another server while
//! no byte has been forwarded), and relay the bytes untouched both ways.

mod client_hello;
pub mod proxy_protocol;
mod relay;

pub use client_hello::{inspect as inspect_client_hello, Hello, Unusable, MAX_CLIENT_HELLO};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use sluice_config::{Condition, Service};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::access_log::Record;
use crate::error::ProxyError;
use crate::forward::{affinity, Attempts};
use crate::listener::Listening;
use crate::persistence::Decision;
use crate::routing::{self, Connection};
use crate::state::{ActiveGuard, PoolRt, ServerRt, Snapshot};

/// Serves one client connection of tcp service `index` of `snapshot` (the generation it
/// was accepted under) until it closes.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: Listening,
    snapshot: &Snapshot,
    index: usize,
) {
    let service = &snapshot.config.services[index];
    let start = Instant::now();
    let mut record = Record {
        time: Some(SystemTime::now()),
        client: Some(peer),
        service: service.name.clone(),
        proto: "TCP",
        ..Record::default()
    };
    let mut first_bytes = Vec::new();
    if reads_sni(service) {
        let (bytes, hello) = client_hello::read(&mut client, service.timeouts.client_hello).await;
        first_bytes = bytes;
        match hello {
            Ok(sni) => {
                record.proto = "TLS";
                record.sni = sni;
            }
            // Not TLS, too large, too slow: nothing a server behind an SNI route expects.
            Err(unusable) => {
                if let Unusable::Malformed(why) = &unusable {
                    tracing::info!(client = %peer, service = %service.name, "not a TLS ClientHello: {why}");
                }
                record.end = unusable.as_str();
            }
        }
    }
    if record.end.is_empty() {
        let relayed = session(snapshot, service, client, peer, first_bytes, &mut record).await;
        if let Err(e) = relayed {
            tracing::debug!(client = %peer, service = %service.name, "not relayed: {e}");
            record.end = e.end_state();
        }
    }
    record.t_total = Some(start.elapsed());
    ctx.log.write(&record);
}

/// Routes (by the server name the record holds, if any), connects and relays a connection
/// whose first bytes (if any) have been read.
async fn session(
    snapshot: &Snapshot,
    service: &Service,
    client: TcpStream,
    peer: SocketAddr,
    first_bytes: Vec<u8>,
    record: &mut Record,
) -> Result<(), ProxyError> {
    let view = Connection::new(record.sni.as_deref(), peer.ip());
    let (route, pool) =
        routing::select(service, |c| view.holds_all(c)).ok_or(ProxyError::NoRoute)?;
    record.route = route.map(|r| r.name.clone());
    let pool = snapshot.pools[pool].clone();
    record.pool = Some(pool.cfg.name.clone());
    let (server, mut upstream, _active) = connect(&pool, peer, record).await?;
    let local = client.local_addr().unwrap_or(peer);
    let mut preamble = pool
        .cfg
        .send_proxy
        .map(|v| proxy_protocol::for_client(v, peer, local))
        .unwrap_or_default();
    preamble.extend_from_slice(&first_bytes);
    if let Err(e) = upstream.write_all(&preamble).await {
        return Err(ProxyError::ServerFailed {
            server: server.cfg.name.clone(),
            reason: e.to_string(),
        });
    }
    let mut cut = server.live.cut_signal();
    let stop = async move {
        let _ = cut.wait_for(Option::is_some).await;
    };
    let relayed = relay::relay(
        client,
        upstream,
        service.timeouts.idle,
        service.splice,
        stop,
    )
    .await;
    record.bytes_in = relayed.up + first_bytes.len() as u64;
    record.bytes_out = relayed.down;
    record.end = relayed.end.as_str();
    Ok(())
}

/// Whether the service's routes look at the TLS server name, so the ClientHello must be
/// read before a server is chosen.
fn reads_sni(service: &Service) -> bool {
    fn mentions(conditions: &[Condition]) -> bool {
        conditions.iter().any(|c| match c {
            Condition::Sni(_) => true,
            Condition::Not(inner) => mentions(inner),
            Condition::Any(groups) => groups.iter().any(|g| mentions(g)),
            _ => false,
        })
    }
    service.routes.iter().any(|r| mentions(&r.conditions))
}

/// A server of `pool` and a connection to it: the persisted server first, then the
/// pool's choice, another server after each failed connect (up to the pool's retries).
async fn connect(
    pool: &Arc<PoolRt>,
    peer: SocketAddr,
    record: &mut Record,
) -> Result<(Arc<ServerRt>, TcpStream, ActiveGuard), ProxyError> {
    let now = Instant::now();
    let (sticky, choice) = affinity(pool, &mut HeaderMap::new(), peer.ip(), now)?;
    let mut attempts = Attempts::new(pool, choice);
    while let Some((index, server, active)) = attempts.next(record) {
        let connecting = Instant::now();
        record
            .t_wait
            .get_or_insert(connecting.saturating_duration_since(now));
        match open(pool, &server).await {
            Ok(stream) => {
                record.t_connect = Some(connecting.elapsed());
                if let Some(persistence) = &pool.persistence {
                    record.persist = Some(Decision::of(sticky, index).as_str());
                    persistence.remember(sticky, index, now);
                }
                return Ok((server, stream, active));
            }
            Err(reason) => attempts.unreachable(index, &server, reason),
        }
    }
    Err(attempts.gave_up())
}

async fn open(pool: &PoolRt, server: &ServerRt) -> Result<TcpStream, String> {
    let timeout = pool.cfg.timeouts.connect;
    match tokio::time::timeout(timeout, TcpStream::connect(server.cfg.address)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connect timed out after {}ms", timeout.as_millis())),
    }
}
