//! One line per request on stdout, written by one background thread so the data plane
//! never blocks on the terminal or a slow pipe. The same record feeds the metrics, so the
//! log and the counters cannot disagree. Format (logfmt by default, or JSON with the same
//! fields; documented in docs/access-log.md):
//!
//! `2026-11-21T23:40:00.123Z client=127.0.0.1:53422 service=mail route=ews pool=ews
//! server=cas1 method=POST uri="/EWS/Exchange.asmx" proto=HTTP/1.1 status=200 in=1234
//! out=5678 t_hdr=1 t_wait=0 t_conn=2 t_resp=15 t_total=20 end=done`

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_config::{LogFormat, Name};

use crate::metrics::Metrics;

/// Where access log lines go, and the metrics every record counts in. Cheap to clone;
/// `disabled()` writes no lines but still counts.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
    format: LogFormat,
    /// Shared: every connection holds a clone of its log.
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer thread (stdout). Lines beyond `capacity` waiting are dropped and
    /// counted rather than stalling requests.
    pub fn stdout(capacity: usize) -> Self {
        let (tx, rx) = sync_channel::<String>(capacity);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || {
                // Standard output is locked per batch, not for good: the rest of the
                // process may print too.
                let stdout = std::io::stdout();
                let mut batch = Vec::with_capacity(64 * 1024);
                while let Ok(line) = rx.recv() {
                    batch.extend_from_slice(line.as_bytes());
                    while batch.len() < 64 * 1024 {
                        let Ok(more) = rx.try_recv() else { break };
                        batch.extend_from_slice(more.as_bytes());
                    }
                    let mut out = stdout.lock();
                    let _ = out.write_all(&batch);
                    let _ = out.flush();
                    batch.clear();
                }
            })
            .map(|_| AccessLog::to(Some(tx)))
            .unwrap_or_else(|_| AccessLog::disabled())
    }

    fn to(tx: Option<SyncSender<String>>) -> Self {
        AccessLog {
            tx,
            dropped: Arc::default(),
            format: LogFormat::Logfmt,
            metrics: Arc::default(),
        }
    }

    /// Writes lines in `format` instead of logfmt.
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Sends lines to a channel instead (tests, embedding).
    pub fn channel(capacity: usize) -> (Self, std::sync::mpsc::Receiver<String>) {
        let (tx, rx) = sync_channel(capacity);
        (AccessLog::to(Some(tx)), rx)
    }

    pub fn disabled() -> Self {
        AccessLog::to(None)
    }

    /// Whether lines are written (metrics are counted either way).
    pub fn writes_lines(&self) -> bool {
        self.tx.is_some()
    }

    /// Counts the request in the metrics and writes its line.
    pub fn write(&self, record: &Record) {
        self.metrics.request(record);
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            LogFormat::Logfmt => record.to_line(),
            LogFormat::Json => record.to_json(),
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What one request did. Timings are `None` where the step did not happen.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub time: Option<SystemTime>,
    pub client: Option<SocketAddr>,
    pub service: Name,
    pub route: Option<Name>,
    pub pool: Option<Name>,
    pub server: Option<Name>,
    pub method: String,
    pub uri: String,
    pub proto: &'static str,
    /// The TLS server name the client asked for, where sluice read it.
    pub sni: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Receiving the request line and headers.
    pub t_headers: Option<Duration>,
    /// Choosing a server.
    pub t_wait: Option<Duration>,
    /// Establishing the server connection (zero when an idle one was reused).
    pub t_connect: Option<Duration>,
    /// From sending the request to the server's response headers.
    pub t_response: Option<Duration>,
    pub t_total: Option<Duration>,
    pub end: &'static str,
    /// The request went over, or started, a server connection owned by its client
    /// connection (NTLM/Negotiate).
    pub pinned: bool,
    /// What persistence decided: `new`, `hit` or `redispatched`.
    pub persist: Option<&'static str>,
}

impl Record {
    /// A connection of a tcp service rather than an HTTP request.
    pub fn is_layer4(&self) -> bool {
        matches!(self.proto, "TCP" | "TLS")
    }

    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(256);
        let time = self.time.unwrap_or_else(SystemTime::now);
        let _ = write!(s, "{}", humantime::format_rfc3339_millis(time));
        let client = self.client.map(|c| c.to_string());
        field(&mut s, "client", client.as_deref());
        field(&mut s, "service", Some(&self.service));
        field(&mut s, "route", self.route.as_deref());
        field(&mut s, "pool", self.pool.as_deref());
        field(&mut s, "server", self.server.as_deref());
        field(&mut s, "method", Some(&self.method));
        field(&mut s, "uri", Some(&self.uri));
        field(&mut s, "proto", Some(self.proto));
        field(&mut s, "sni", self.sni.as_deref());
        let _ = write!(
            s,
            " status={} in={} out={}",
            self.status, self.bytes_in, self.bytes_out
        );
        for (key, t) in [
            ("t_hdr", self.t_headers),
            ("t_wait", self.t_wait),
            ("t_conn", self.t_connect),
            ("t_resp", self.t_response),
            ("t_total", self.t_total),
        ] {
            match t {
                Some(t) => {
                    let _ = write!(s, " {key}={}", t.as_millis());
                }
                None => {
                    let _ = write!(s, " {key}=-");
                }
            }
        }
        let _ = write!(s, " pinned={}", u8::from(self.pinned));
        field(&mut s, "persist", self.persist);
        let _ = writeln!(s, " end={}", self.end);
        s
    }
}

impl Record {
    /// One JSON object and a newline; the fields and units of `to_line`, absent values
    /// as `null`.
    pub fn to_json(&self) -> String {
        let time = self.time.unwrap_or_else(SystemTime::now);
        let ms = |t: Option<Duration>| t.map(|t| t.as_millis() as u64);
        let mut line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(time).to_string(),
            "client": self.client.map(|c| c.to_string()),
            "service": &*self.service,
            "route": self.route.as_deref(),
            "pool": self.pool.as_deref(),
            "server": self.server.as_deref(),
            "method": self.method,
            "uri": self.uri,
            "proto": self.proto,
            "sni": self.sni,
            "status": self.status,
            "in": self.bytes_in,
            "out": self.bytes_out,
            "t_hdr": ms(self.t_headers),
            "t_wait": ms(self.t_wait),
            "t_conn": ms(self.t_connect),
            "t_resp": ms(self.t_response),
            "t_total": ms(self.t_total),
            "pinned": self.pinned,
            "persist": self.persist,
            "end": self.end,
        })
        .to_string();
        line.push('\n');
        line
    }
}

/// ` key=value`, quoting values that hold spaces, quotes or control characters; `-` for none.
fn field(out: &mut String, key: &str, value: Option<&str>) {
    let value = value.filter(|v| !v.is_empty()).unwrap_or("-");
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'=');
    if plain {
        let _ = write!(out, " {key}={value}");
        return;
    }
    let _ = write!(out, " {key}=\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_one_logfmt_line() {
        let r = Record {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            service: "mail".into(),
            route: Some("ews".into()),
            pool: Some("ews".into()),
            server: Some("cas1".into()),
            method: "RPC_IN_DATA".into(),
            uri: "/rpc/rpcproxy.dll?a b\"c".into(),
            proto: "HTTP/1.1",
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            t_headers: Some(Duration::from_millis(1)),
            t_connect: Some(Duration::ZERO),
            end: "done",
            pinned: true,
            ..Record::default()
        };
        assert_eq!(
            r.to_line(),
            "1970-01-01T00:00:01.500Z client=127.0.0.1:5000 service=mail route=ews pool=ews server=cas1 \
             method=RPC_IN_DATA uri=\"/rpc/rpcproxy.dll?a b\\\"c\" proto=HTTP/1.1 sni=- status=200 in=10 out=20 \
             t_hdr=1 t_wait=- t_conn=0 t_resp=- t_total=- pinned=1 persist=- end=done\n"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["uri"], "/rpc/rpcproxy.dll?a b\"c");
        assert_eq!(json["status"], 200);
        assert_eq!(json["t_conn"], 0);
        assert_eq!(json["t_wait"], serde_json::Value::Null);
        assert_eq!(json["time"], "1970-01-01T00:00:01.500Z");
    }
}
