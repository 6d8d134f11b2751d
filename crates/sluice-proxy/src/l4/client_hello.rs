//! Reading the server name (SNI) of a TLS ClientHello without terminating TLS. The bytes
//! read are kept, to be forwarded untouched to the server the name chooses.
//!
//! The parsing is rustls's (`Acceptor`, which reassembles a ClientHello split over
//! several records and refuses malformed ones); this module owns the buffering, the size
//! and time limits, and what each outcome means for routing.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A ClientHello larger than this is not waited for (post-quantum key shares make them
/// about 1.8 KiB; a few KiB of extensions is already generous).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the first bytes of a connection turned out to be: a complete ClientHello with
/// the server name it asked for, if any, or why there is none to route by.
pub type Hello = Result<Option<String>, Unusable>;

/// Why a connection brought no usable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not a TLS ClientHello, or a malformed one.
    Malformed(String),
    /// The limit passed before a complete ClientHello arrived.
    TooLarge,
    /// The client closed before sending a complete ClientHello.
    Closed,
    /// The client sent nothing complete in time.
    TimedOut,
}

impl Unusable {
    /// The access log's `end` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unusable::Malformed(_) => "bad_client_hello",
            Unusable::TooLarge => "client_hello_too_large",
            Unusable::Closed => "client_closed",
            Unusable::TimedOut => "client_hello_timeout",
        }
    }
}

/// Inspects the bytes received so far: `None` while the ClientHello is incomplete.
pub fn inspect(received: &[u8]) -> Option<Hello> {
    let mut acceptor = Acceptor::default();
    let mut rest = received;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Some(Err(Unusable::Malformed(e.to_string()))),
        }
    }
    match acceptor.accept() {
        Ok(None) if received.len() >= MAX_CLIENT_HELLO => Some(Err(Unusable::TooLarge)),
        Ok(None) => None,
        Ok(Some(accepted)) => Some(Ok(accepted
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase))),
        Err((e, _)) => Some(Err(Unusable::Malformed(e.to_string()))),
    }
}

/// Reads from the client until its ClientHello is complete, malformed, too large, or
/// `limit` has passed. Returns what was read (to forward) and what it was.
pub async fn read(client: &mut TcpStream, limit: Duration) -> (Vec<u8>, Hello) {
    let mut received = Vec::with_capacity(2048);
    let reading = async {
        let mut chunk = [0u8; 4096];
        loop {
            let room = MAX_CLIENT_HELLO - received.len();
            let n = match client.read(&mut chunk[..room.min(4096)]).await {
                Ok(0) | Err(_) => return Err(Unusable::Closed),
                Ok(n) => n,
            };
            received.extend_from_slice(&chunk[..n]);
            if let Some(hello) = inspect(&received) {
                return hello;
            }
        }
    };
    let hello = tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(Err(Unusable::TimedOut));
    (received, hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello for `name`, as rustls's client writes it.
    fn client_hello(name: &str) -> Vec<u8> {
        let config = crate::tls::handshake_only_config();
        let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_server_name_of_a_complete_hello() {
        let hello = client_hello("Mail.Example.com");
        assert_eq!(inspect(&hello), Some(Ok(Some("mail.example.com".into()))));
    }

    #[test]
    fn waits_for_every_prefix_of_a_hello() {
        let hello = client_hello("autodiscover.example.com");
        for cut in 0..hello.len() {
            assert_eq!(inspect(&hello[..cut]), None, "prefix of {cut} bytes");
        }
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        let hello = client_hello("ews.example.com");
        // Re-frame the handshake message as records of 100 bytes each.
        let message = &hello[5..];
        let mut framed = Vec::new();
        for part in message.chunks(100) {
            framed.extend_from_slice(&[0x16, 0x03, 0x01]);
            framed.extend_from_slice(&(part.len() as u16).to_be_bytes());
            framed.extend_from_slice(part);
        }
        assert_eq!(inspect(&framed), Some(Ok(Some("ews.example.com".into()))));
    }

    /// ClientHellos OpenSSL's client wrote (also the fuzzer's seed corpus).
    fn seeds() -> [(&'static [u8], Option<&'static str>); 4] {
        [
            (
                include_bytes!("../../../../fuzz/corpus/client_hello/tls13-sni"),
                Some("mail.example.com"),
            ),
            (
                include_bytes!("../../../../fuzz/corpus/client_hello/tls12-sni"),
                Some("autodiscover.example.com"),
            ),
            (
                include_bytes!("../../../../fuzz/corpus/client_hello/alpn-h2"),
                Some("ews.example.com"),
            ),
            (
                include_bytes!("../../../../fuzz/corpus/client_hello/no-sni"),
                None,
            ),
        ]
    }

    #[test]
    fn reads_the_hellos_of_another_implementation() {
        for (hello, sni) in seeds() {
            assert_eq!(inspect(hello), Some(Ok(sni.map(str::to_string))));
        }
    }

    /// A bounded, seeded stand-in for the fuzzer (`fuzz/`), run with every test: mutated
    /// hellos never panic, and nothing of the size limit or more is waited on.
    #[test]
    fn mutated_hellos_never_panic_or_wait_past_the_limit() {
        let mut x: u64 = 0x5eed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (hello, _) in seeds() {
            for _ in 0..3000 {
                let mut m = hello.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % m.len().max(1);
                    match next() % 5 {
                        0 => m[at] ^= 1 << (next() % 8),
                        1 => m[at] = [0, 0xff, 0x7f, 0x80][(next() % 4) as usize],
                        2 => m.truncate(at),
                        3 => m.splice(at..at, m[..at].to_vec()).for_each(drop),
                        _ => m
                            .get_mut(3..5)
                            .into_iter()
                            .flatten()
                            .for_each(|b| *b = next() as u8),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                let _ = inspect(&m);
                let _ = inspect(&m[..(next() as usize) % (m.len() + 1)]);
                m.resize(MAX_CLIENT_HELLO, 0);
                assert!(inspect(&m).is_some(), "waits past the limit");
            }
        }
    }

    #[test]
    fn names_what_is_not_a_hello() {
        assert!(matches!(
            inspect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Err(Unusable::Malformed(_)))
        ));
        assert!(matches!(
            inspect(b"EHLO client.example.com\r\n"),
            Some(Err(Unusable::Malformed(_)))
        ));
        // A handshake record whose message claims more than the limit.
        let mut huge = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
        huge.resize(MAX_CLIENT_HELLO, 0);
        assert!(inspect(&huge).is_some());
    }
}
