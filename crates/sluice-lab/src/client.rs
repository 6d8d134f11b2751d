//! A plain HTTP/1.1 client over one keep-alive connection, for tests and the lab.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub struct Client {
    sender: SendRequest<Body>,
    host: String,
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        Self::over(TcpStream::connect(addr).await?, addr).await
    }

    /// A connection from local address `from` (any of 127.0.0.0/8 works on loopback), to
    /// look like a client at another address.
    pub async fn connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
    ) -> Result<Client, BoxError> {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        Self::over(socket.connect(addr).await?, addr).await
    }

    async fn over(tcp: TcpStream, addr: SocketAddr) -> Result<Client, BoxError> {
        Self::over_stream(tcp, &addr.to_string()).await
    }

    /// HTTP/1.1 over a connection already made (e.g. TLS set up by the caller), sending
    /// `host` as the `Host` header.
    pub async fn over_stream<S>(stream: S, host: &str) -> Result<Client, BoxError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            sender,
            host: host.to_string(),
        })
    }

    /// An HTTPS connection to `addr` for `name`, trusting only `trusted` (HTTP/1.1).
    pub async fn connect_tls(
        addr: SocketAddr,
        name: &str,
        trusted: rustls_pki_types::CertificateDer<'static>,
    ) -> Result<Client, BoxError> {
        let tls = tls_connect(addr, name, trusted).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Client {
            sender,
            host: name.to_string(),
        })
    }

    /// Whether the connection has ended (closed by the other side or failed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// The `Host` header to send from now on.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
        let req = self.request("GET", path).body(empty())?;
        self.send(req).await
    }

    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
    }

    pub async fn send(&mut self, req: Request<Body>) -> Result<Reply, BoxError> {
        let response = self.send_streaming(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends and returns the response with its body still streaming.
    pub async fn send_streaming(
        &mut self,
        req: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
        // The previous response may still be settling on this keep-alive connection.
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body of `len` filler bytes made as it is sent, with its length declared, so an
/// upload of any size costs no memory.
pub fn generated(len: u64) -> Body {
    crate::bodies::Filler::new(len)
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A TLS stream to `addr` for `name`, trusting only `trusted`, offering HTTP/1.1: for
/// clients that write HTTP by hand.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    trusted: rustls_pki_types::CertificateDer<'static>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string())?;
    let tcp = TcpStream::connect(addr).await?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(server_name, tcp)
            .await?,
    )
}
