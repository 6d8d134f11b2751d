//! The PROXY protocol header a connection to a server starts with, telling it which
//! client the connection is for (the header's format is the `ppp` crate's).

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Version};
use sluice_config::ProxyProtocol;

/// The header for a client connection from `client` that arrived at `local`.
pub fn for_client(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        ProxyProtocol::V2 => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (client, local),
        )
        .build()
        .unwrap_or_else(|_| local_header(ProxyProtocol::V2)),
    }
}

/// The header of a connection sluice makes for itself (a health check): v2's LOCAL,
/// v1's UNKNOWN. Servers then take the connection's own addresses.
pub fn local_header(version: ProxyProtocol) -> Vec<u8> {
    match version {
        ProxyProtocol::V1 => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        ProxyProtocol::V2 => Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap_or_default(),
    }
}

/// Both addresses in one family: an IPv4 client of an IPv6 listener is written as its
/// IPv4-mapped IPv6 address, and a mapped one as plain IPv4 when the listener is IPv4.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V6(_)) => (
            SocketAddr::new(c.ip().to_ipv6_mapped().into(), c.port()),
            local,
        ),
        (SocketAddr::V6(_), SocketAddr::V4(l)) => (
            client,
            SocketAddr::new(l.ip().to_ipv6_mapped().into(), l.port()),
        ),
        _ => (client, local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_both_ends() {
        let header = for_client(
            ProxyProtocol::V1,
            "192.0.2.7:51000".parse().unwrap(),
            "10.0.0.1:25".parse().unwrap(),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 25\r\n");
        assert_eq!(local_header(ProxyProtocol::V1), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_parses_back_to_the_same_addresses() {
        let client: SocketAddr = "192.0.2.7:51000".parse().unwrap();
        let local: SocketAddr = "[::1]:993".parse().unwrap();
        let header = for_client(ProxyProtocol::V2, client, local);
        let parsed = ppp::v2::Header::try_from(&header[..]).unwrap();
        assert_eq!(parsed.command, Command::Proxy);
        match parsed.addresses {
            ppp::v2::Addresses::IPv6(a) => {
                assert_eq!(
                    a.source_address,
                    "::ffff:192.0.2.7".parse::<std::net::Ipv6Addr>().unwrap()
                );
                assert_eq!((a.source_port, a.destination_port), (51000, 993));
            }
            other => panic!("unexpected addresses {other:?}"),
        }
        let local = local_header(ProxyProtocol::V2);
        let local = ppp::v2::Header::try_from(&local[..]).unwrap();
        assert_eq!(local.command, Command::Local);
    }
}
