//! One emulated Client Access server: its listener, its per-connection authentication and
//! the dispatch of each request to its workload.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use sluice_exchange::{Version, Workload};
use sluice_lab::backend::{listen, serve_http1};
use sluice_lab::conn_auth::ConnAuth;
use sluice_lab::TestCert;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::reply::{self, Body};
use crate::seal::{Seal, SealKey};
use crate::state::{Components, Counters, Counts, Mailboxes};
use crate::{activesync, admin, auth, autodiscover, ews, mapi, owa, rpc};

/// How long the emulator holds its long-lived answers. Exchange's own values are in
/// [`Timings::exchange`]; the lab and tests scale them down.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// A MAPI `PENDING` keep-alive chunk this often (`X-PendingPeriod`).
    pub mapi_pending: Duration,
    /// How long a MAPI `NotificationWait` is held when nothing happens.
    pub mapi_wait: Duration,
    /// What one second of an ActiveSync `Ping` heartbeat lasts.
    pub heartbeat_second: Duration,
    /// An RPC OUT channel sends a ping PDU this often.
    pub rpc_ping: Duration,
}

impl Timings {
    /// Exchange's values (NotificationWait's 5 minutes mirrors its RPC twin).
    pub fn exchange() -> Timings {
        Timings {
            mapi_pending: Duration::from_secs(30),
            mapi_wait: Duration::from_secs(300),
            heartbeat_second: Duration::from_secs(1),
            rpc_ping: Duration::from_secs(30),
        }
    }

    /// Fast enough to watch in the lab: a 480 s heartbeat lasts 4.8 s.
    pub fn lab() -> Timings {
        Timings {
            mapi_pending: Duration::from_secs(1),
            mapi_wait: Duration::from_secs(10),
            heartbeat_second: Duration::from_millis(10),
            rpc_ping: Duration::from_secs(1),
        }
    }

    /// For tests: everything within a fraction of a second.
    pub fn quick() -> Timings {
        Timings {
            mapi_pending: Duration::from_millis(50),
            mapi_wait: Duration::from_millis(400),
            heartbeat_second: Duration::from_millis(1),
            rpc_ping: Duration::from_millis(50),
        }
    }
}

/// What to start.
#[derive(Clone)]
pub struct ServerSpec {
    /// Short name (`EX1`); the FQDN is `<name>.contoso.lab`.
    pub name: String,
    pub version: Version,
    /// Serve HTTPS with a self-signed certificate of its own (else plain HTTP).
    pub tls: bool,
    /// The key sealing forms-login cookies. Servers given the same key (as if they shared a
    /// certificate) read each other's cookies, if their versions share a cookie format.
    pub seal_key: SealKey,
    pub timings: Timings,
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Where the admin endpoint listens (port 0: any free port).
    pub admin_addr: SocketAddr,
}

impl ServerSpec {
    /// An HTTPS server on free loopback ports with a key of its own and quick timings.
    pub fn new(name: &str, version: Version) -> ServerSpec {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerSpec {
            name: name.to_string(),
            version,
            tls: true,
            seal_key: SealKey::generate(),
            timings: Timings::quick(),
            addr: any,
            admin_addr: any,
        }
    }
}

/// What every request handler may read: the server's identity, switches and counters.
pub(crate) struct Shared {
    pub name: String,
    pub fqdn: String,
    pub version: Version,
    pub components: Components,
    pub counters: Counters,
    pub seal: Seal,
    /// EWS subscriptions: the array's mailbox store from 2013, the server's own on 2010.
    pub mailboxes: Arc<Mailboxes>,
    pub timings: Timings,
}

/// A running emulated server; dropping it stops it.
pub struct ExchangeServer {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    cert: Option<TestCert>,
    tasks: Vec<JoinHandle<()>>,
}

impl ExchangeServer {
    /// Starts a server; `mailboxes` is the store 2013 and later servers of one array share.
    pub fn start(spec: ServerSpec, mailboxes: Arc<Mailboxes>) -> std::io::Result<ExchangeServer> {
        let fqdn = format!("{}.contoso.lab", spec.name);
        let cert = spec
            .tls
            .then(|| TestCert::new(&[fqdn.as_str(), "localhost", "*.contoso.lab"]));
        let mailboxes = match spec.version {
            Version::V2010 => Arc::default(),
            _ => mailboxes,
        };
        let shared = Arc::new(Shared {
            seal: Seal::new(&spec.seal_key, spec.version),
            name: spec.name,
            fqdn,
            version: spec.version,
            components: Components::default(),
            counters: Counters::default(),
            mailboxes,
            timings: spec.timings,
        });
        let listener = listen(spec.addr)?;
        let admin_listener = listen(spec.admin_addr)?;
        let tls = cert.as_ref().map(|c| TlsAcceptor::from(c.server_config()));
        Ok(ExchangeServer {
            addr: listener.local_addr()?,
            admin_addr: admin_listener.local_addr()?,
            tasks: vec![
                tokio::spawn(serve(listener, tls, shared.clone())),
                tokio::spawn(admin::serve(admin_listener, shared.clone())),
            ],
            shared,
            cert,
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn fqdn(&self) -> &str {
        &self.shared.fqdn
    }

    pub fn version(&self) -> Version {
        self.shared.version
    }

    /// The certificate it presents, if it speaks HTTPS.
    pub fn certificate(&self) -> Option<&TestCert> {
        self.cert.as_ref()
    }

    /// Switches one workload's component (`owa`, `ews`, ...) on or off, as
    /// `Set-ServerComponentState` or a Managed Availability responder would. Returns
    /// false for an unknown workload.
    pub fn set_active(&self, workload: &str, active: bool) -> bool {
        self.shared.components.set(workload, active)
    }

    pub fn is_active(&self, workload: &str) -> bool {
        self.shared.components.is_active(workload)
    }

    /// What it has served so far.
    pub fn counts(&self) -> Counts {
        self.shared.counters.snapshot()
    }
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, most likely: give connections a moment to close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        let (tls, shared) = (tls.clone(), shared.clone());
        conns.spawn(async move {
            shared.counters.connection();
            // The identity NTLM binds belongs to this TCP connection, as in IIS.
            let auth = Arc::new(Mutex::new(ConnAuth::default()));
            let svc = service_fn(move |req| answer(shared.clone(), auth.clone(), req));
            serve_http1(tcp, tls, svc).await;
        });
    }
}

async fn answer(
    shared: Arc<Shared>,
    auth: Arc<Mutex<ConnAuth>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut response = dispatch(&shared, &auth, req).await;
    reply::stamp(&shared, &mut response);
    Ok(response)
}

async fn dispatch(
    shared: &Arc<Shared>,
    auth: &Mutex<ConnAuth>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_ascii_lowercase();
    let Some(workload) = workload_of(&path, shared.version) else {
        return match path.as_str() {
            "/" => root(shared.version),
            _ => reply::status(StatusCode::NOT_FOUND),
        };
    };
    if path == workload.health_path {
        return health_page(shared, &workload);
    }
    if !shared.components.is_active(workload.name) {
        return reply::status(StatusCode::SERVICE_UNAVAILABLE);
    }
    shared.counters.served(workload.name);
    match workload.name {
        "owa" | "ecp" => owa::handle(shared, &workload, req).await,
        "ews" | "mapi" | "rpc" => windows_authenticated(shared, auth, &workload, req).await,
        "activesync" => activesync::handle(shared, req).await,
        "autodiscover" => autodiscover::handle(shared, req).await,
        _ => reply::text(
            StatusCode::OK,
            format!("{}: {}\n", shared.name, workload.title),
        ),
    }
}

/// The workloads IIS runs with Windows authentication: the connection's user, or the 401,
/// is settled from the headers before the workload sees the request.
async fn windows_authenticated(
    shared: &Shared,
    conn: &Mutex<ConnAuth>,
    workload: &Workload,
    req: Request<Incoming>,
) -> Response<Body> {
    let identity = match auth::user(conn, req.headers()) {
        Ok(identity) => identity,
        Err(challenge) => return challenge.response(),
    };
    let mut response = match workload.name {
        "ews" => ews::handle(shared, &identity.user, req).await,
        "mapi" => mapi::handle(shared, &identity.user, req).await,
        _ => rpc::handle(shared, req).await,
    };
    identity.mark(&mut response);
    response
}

/// The workload whose virtual directory holds `path` (already lowercase), if this
/// version has it.
fn workload_of(path: &str, version: Version) -> Option<Workload> {
    sluice_exchange::WORKLOADS.into_iter().find(|w| {
        w.since <= version
            && path
                .strip_prefix(w.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// From 2013 CU6 Exchange redirects `/` to OWA; 2010 shows the IIS start page.
fn root(version: Version) -> Response<Body> {
    if version == Version::V2010 {
        return reply::text(StatusCode::OK, "IIS7\n");
    }
    reply::redirect(StatusCode::MOVED_PERMANENTLY, "/owa/")
}

/// Managed Availability's page: present only while the component is active, and only
/// from 2013.
fn health_page(shared: &Shared, workload: &Workload) -> Response<Body> {
    shared.counters.health_check();
    if !shared.version.has_health_pages() {
        return reply::status(StatusCode::NOT_FOUND);
    }
    if !shared.components.is_active(workload.name) {
        return reply::status(StatusCode::SERVICE_UNAVAILABLE);
    }
    reply::html(
        StatusCode::OK,
        format!("200 OK<br/>{}", shared.fqdn.to_ascii_uppercase()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_workload_as_whole_segments() {
        let name = |p: &str, v| workload_of(p, v).map(|w| w.name);
        assert_eq!(name("/owa/", Version::V2016), Some("owa"));
        assert_eq!(name("/owa", Version::V2016), Some("owa"));
        assert_eq!(name("/owastuff", Version::V2016), None);
        assert_eq!(
            name("/microsoft-server-activesync", Version::V2013),
            Some("activesync")
        );
        assert_eq!(name("/mapi/emsmdb/", Version::V2013), Some("mapi"));
        assert_eq!(name("/mapi/emsmdb/", Version::V2010), None);
    }
}
