//! A real HTTP/1.1 server (plain or TLS) that answers in ways tests can check:
//!
//! | path | answer |
//! |---|---|
//! | `/download?bytes=N` | N bytes streamed in 64 KiB frames |
//! | `/upload` | reads the whole body, answers `received=N` |
//! | `/chunks?n=N&ms=M` | chunked response: N chunks `chunk i\n`, M ms apart |
//! | `/headers` | the request's headers, one `name: value` a line |
//! | `/status/N` | status N |
//! | `/whoami` | the user this connection authenticated as (see [`crate::conn_auth`]), else 401 |
//! | anything else | `NAME\n` |
//!
//! Every response carries `X-Server: NAME` and `X-Target: ` the request's path and query.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::bodies::{ChannelBody, Filler};
use crate::conn_auth::{ConnAuth, Verdict};

type Body = UnsyncBoxBody<Bytes, Infallible>;

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: ServerTask,
}

/// The task that accepts a lab server's connections and owns them, so stopping it is the
/// server dying: listener and connections close at once.
#[derive(Default)]
pub(crate) struct ServerTask(Mutex<Option<JoinHandle<()>>>);

impl ServerTask {
    /// Accepts on `listener` until stopped, counting each connection in `connections`
    /// and serving it with `serve` in a task the server owns.
    pub(crate) fn accept<F, Fut>(
        &self,
        listener: TcpListener,
        connections: Arc<AtomicU64>,
        serve: F,
    ) where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::Relaxed);
                conns.spawn(serve(tcp));
                while conns.try_join_next().is_some() {}
            }
        });
        *self.0.lock().unwrap() = Some(task);
    }

    pub(crate) async fn stop(&self) {
        let task = self.0.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Backend {
    /// A plain HTTP server on an ephemeral loopback port.
    pub async fn start(name: &str) -> Backend {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap(), None).await
    }

    /// An HTTPS server presenting `config`'s certificate.
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Backend {
        Self::start_at(
            name,
            "127.0.0.1:0".parse().unwrap(),
            Some(TlsAcceptor::from(config)),
        )
        .await
    }

    async fn start_at(name: &str, addr: SocketAddr, tls: Option<TlsAcceptor>) -> Backend {
        let listener = listen(addr).expect("bind a loopback port");
        let backend = Backend {
            name: name.to_string(),
            addr: listener.local_addr().expect("bound address"),
            tls,
            hits: Arc::default(),
            connections: Arc::default(),
            task: ServerTask::default(),
        };
        backend.spawn(listener);
        backend
    }

    fn spawn(&self, listener: TcpListener) {
        let name = self.name.clone();
        let hits = self.hits.clone();
        let tls = self.tls.clone();
        self.task
            .accept(listener, self.connections.clone(), move |tcp| {
                let (name, hits, tls) = (name.clone(), hits.clone(), tls.clone());
                async move {
                    let auth = Arc::new(Mutex::new(ConnAuth::default()));
                    let svc = service_fn(move |req| {
                        answer(name.clone(), hits.clone(), auth.clone(), req)
                    });
                    serve_http1(tcp, tls, svc).await;
                }
            });
    }

    /// Requests answered so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Closes the listener and every open connection, as if the server died.
    pub async fn stop(&self) {
        self.task.stop().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = listen(self.addr).expect("rebind the same port");
        self.spawn(listener);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one accepted connection over HTTP/1.1, through TLS when `tls` is given, until
/// either side closes it.
pub async fn serve_http1<S>(tcp: TcpStream, tls: Option<TlsAcceptor>, svc: S)
where
    S: HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
{
    let builder = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        }
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(tcp).await {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            }
        }
    }
}

/// A loopback listener with SO_REUSEADDR, so a stopped server can listen again on its port.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed_unsync()
}

async fn answer(
    name: String,
    hits: Arc<AtomicU64>,
    auth: Arc<Mutex<ConnAuth>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let target = header_value(target);
    if path == "/whoami" {
        let credentials = req.headers().get("authorization");
        let verdict = auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(credentials.and_then(|v| v.to_str().ok()));
        return Ok(identify(&name, verdict));
    }
    let (status, body) = match path.as_str() {
        "/download" => (
            StatusCode::OK,
            Filler::new(query(&req, "bytes").unwrap_or(0)).boxed_unsync(),
        ),
        "/upload" => {
            let mut received = 0usize;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                received += frame.data_ref().map_or(0, |d| d.len());
            }
            (StatusCode::OK, full(format!("received={received}")))
        }
        "/chunks" => (
            StatusCode::OK,
            chunks(
                query(&req, "n").unwrap_or(3),
                query(&req, "ms").unwrap_or(100),
            ),
        ),
        "/headers" => {
            let lines: String = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            (StatusCode::OK, full(lines))
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            (
                code.unwrap_or(StatusCode::BAD_REQUEST),
                full(format!("{name}\n")),
            )
        }
        _ => (StatusCode::OK, full(format!("{name}\n"))),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("x-server", header_value(&name));
    headers.insert("x-target", target);
    Ok(response)
}

/// The answer to `/whoami`: the connection's user, or a challenge.
fn identify(name: &str, verdict: Verdict) -> Response<Body> {
    let mut response = Response::new(full(""));
    let headers = response.headers_mut();
    headers.insert("x-server", header_value(name));
    match verdict {
        Verdict::User { name, persistent } => {
            headers.insert("x-identity", header_value(&name));
            if persistent {
                headers.insert("persistent-auth", http::HeaderValue::from_static("true"));
            }
            *response.body_mut() = full(format!("{name}\n"));
        }
        Verdict::Challenge(offers) => {
            for offer in offers {
                headers.append("www-authenticate", header_value(&offer));
            }
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
    }
    response
}

fn header_value(text: &str) -> http::HeaderValue {
    text.parse().unwrap_or(http::HeaderValue::from_static("?"))
}

fn chunks(n: u64, ms: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed_unsync()
}
