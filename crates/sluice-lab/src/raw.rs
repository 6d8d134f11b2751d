//! HTTP/1.1 read by hand, for clients that must control exactly when they send what
//! (a body only after `100 Continue`, for one).

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::client::BoxError;

/// How long any one read may take.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Reads one response head: the status line and headers, up to the empty line.
pub async fn read_head<R: AsyncBufRead + Unpin>(conn: &mut R) -> Result<String, BoxError> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(READ_LIMIT, conn.read_line(&mut line))
            .await
            .map_err(|_| format!("no answer within {READ_LIMIT:?} after {head:?}"))??;
        if n == 0 {
            return Err(format!("connection closed after {head:?}").into());
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(head);
        }
        if head.len() > 64 * 1024 {
            return Err("a response head over 64 KiB".into());
        }
    }
}

/// The `Content-Length` a head declares (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The status code of a head.
pub fn status(head: &str) -> Option<u16> {
    head.split(' ').nth(1)?.parse().ok()
}

/// Reads a head and the `Content-Length` body after it.
pub async fn read_response<R: AsyncBufRead + Unpin>(
    conn: &mut R,
) -> Result<(String, Vec<u8>), BoxError> {
    let head = read_head(conn).await?;
    let mut body = vec![0; content_length(&head)];
    tokio::time::timeout(READ_LIMIT, conn.read_exact(&mut body))
        .await
        .map_err(|_| "the body did not arrive in time")??;
    Ok((head, body))
}
