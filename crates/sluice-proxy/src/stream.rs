//! A TCP stream, plain or wrapped in TLS, as one type for hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream<T> {
    Plain(Tcp),
    Tls(Box<T>),
}

pub type ServerStream = Stream<tokio_rustls::client::TlsStream<Tcp>>;

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TCP socket, under TLS or not, whose small vectored writes go out gathered into one
/// `send(2)`: hyper writes a small response as its head and a piece of body, rustls as a
/// record or two, and on Linux `writev(2)` costs more per call than `send(2)` (the vector
/// is copied in and the write goes through the generic file path), more than copying a
/// few hundred bytes does.
pub struct Tcp(pub TcpStream);

/// Vectored writes up to this size are gathered.
const GATHER_MAX: usize = 2048;

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let s = Pin::new(&mut self.get_mut().0);
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        match bufs {
            [one] => s.poll_write(cx, one),
            _ if total <= GATHER_MAX => {
                let mut gathered = [0u8; GATHER_MAX];
                let mut len = 0;
                for buf in bufs {
                    gathered[len..len + buf.len()].copy_from_slice(buf);
                    len += buf.len();
                }
                s.poll_write(cx, &gathered[..len])
            }
            _ => s.poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A client's connection as the listener serves it.
pub type ClientStream = Stream<tokio_rustls::server::TlsStream<Tcp>>;

impl ClientStream {
    /// Ready when the socket has bytes (or an end) to read. A poll, not a future: a
    /// parked connection's state then holds no room for one.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.0.poll_read_ready(cx),
            Stream::Tls(s) => s.get_ref().0 .0.poll_read_ready(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Writes `pieces` as one vectored write (and what is left, as the OS takes it) and
    /// returns what the peer read.
    async fn written_as_one(pieces: &[&[u8]]) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut s: ClientStream = Stream::Plain(Tcp(TcpStream::connect(addr).await.unwrap()));
        let slices: Vec<io::IoSlice> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
        let n = s.write_vectored(&slices).await.unwrap();
        assert!(n > 0);
        s.write_all(&pieces.concat()[n..]).await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        tokio::time::timeout(std::time::Duration::from_secs(5), peer)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn vectored_writes_arrive_whole_and_in_order() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".as_slice();
        let big = vec![b'x'; GATHER_MAX];
        for pieces in [
            vec![head, b"hello".as_slice()],
            vec![head],
            vec![b"".as_slice(), head, b"".as_slice(), b"hello"],
            vec![head, big.as_slice()],
            vec![big.as_slice(), big.as_slice(), head],
        ] {
            let sent = pieces.concat();
            assert_eq!(
                written_as_one(&pieces).await,
                sent,
                "{} pieces",
                pieces.len()
            );
        }
    }
}
