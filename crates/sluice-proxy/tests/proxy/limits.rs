//! Limits with clear answers: the header section's size and field count (431), the target's
//! length (414), each closing the connection with a log line, and the default large enough
//! for a Kerberos ticket.

use sluice_lab::Backend;

use crate::harness::{pool, send_raw, service, start};

fn request(target: &str, headers: &[String]) -> Vec<u8> {
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: a\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("Connection: close\r\n\r\n");
    raw.into_bytes()
}

#[tokio::test]
async fn oversized_heads_get_431_or_414_and_a_log_line() {
    let b = Backend::start("cas1").await;
    let limits = "max_header_size = \"16KiB\"\nmax_headers = 20\nmax_uri = \"1KiB\"\n";
    let lb = start(&(service("p", limits) + &pool("p", &[("cas1", b.addr)], ""))).await;
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or("").to_string();

    let fits = request(
        &format!("/{}", "a".repeat(1000)),
        &[format!("X-Big: {}", "b".repeat(15_000))],
    );
    assert_eq!(status(&send_raw(lb.addr, &fits).await), "200");

    let big = request("/", &[format!("X-Big: {}", "b".repeat(17_000))]);
    assert_eq!(status(&send_raw(lb.addr, &big).await), "431");

    let many: Vec<String> = (0..25).map(|i| format!("X-N{i}: {i}")).collect();
    assert_eq!(
        status(&send_raw(lb.addr, &request("/", &many)).await),
        "431"
    );

    let long = request(&format!("/{}", "a".repeat(1100)), &[]);
    let answer = send_raw(lb.addr, &long).await;
    assert_eq!(status(&answer), "414", "{answer}");

    assert_eq!(
        b.hits(),
        1,
        "only the request within limits reached the server"
    );
    let lines = lb.log_lines();
    for code in ["431", "414"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("status={code}"))),
            "{code}: {lines:#?}"
        );
    }
}

#[tokio::test]
async fn the_default_limits_carry_a_64_kib_kerberos_token() {
    let b = Backend::start("cas1").await;
    let lb = start(&(service("p", "") + &pool("p", &[("cas1", b.addr)], ""))).await;
    let token = format!("Authorization: Negotiate {}", "Y".repeat(64 << 10));
    let answer = send_raw(lb.addr, &request("/owa/", &[token])).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}
