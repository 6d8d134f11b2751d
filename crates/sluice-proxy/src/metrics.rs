//! Prometheus metrics. Counters and histograms are fed by the same typed events that
//! write the log lines (a request's [`Record`], a probe's [`Checked`], a reload's
//! outcome), so the two cannot disagree; gauges are read from the [`Status`] at scrape
//! time. Labels are names from the configuration and status classes, never paths or
//! clients, so the number of series is bounded by the configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_config::Name;
use sluice_health::Checked;

use crate::access_log::Record;
use crate::status::Status;
use crate::sync::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    service: String,
    route: String,
    pool: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    path: PathLabels,
    /// `2xx`, `4xx`...; `none` where nothing was answered.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    #[prometheus(flatten)]
    path: PathLabels,
    /// How the connection ended: `done`, `idle_timeout`, `no_server`...
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    pool: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    pool: String,
    server: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pool: String,
    server: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Time to response headers: from fast pages to hour-long ActiveSync long polls.
fn response_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        1800.0, 3600.0,
    ])
}

fn check_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// The counters and histograms that live for the whole process.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    sessions: Family<SessionLabels, Counter>,
    bytes_in: Family<PathLabels, Counter>,
    bytes_out: Family<PathLabels, Counter>,
    response_seconds: HistogramFamily<PathLabels>,
    checks: Family<CheckLabels, Counter>,
    check_seconds: HistogramFamily<ServerLabels>,
    reloads: Family<OutcomeLabels, Counter>,
    /// Each path's series, found with one hash of shared names per request instead of
    /// four lookups that each hash and clone the label strings.
    paths: Mutex<HashMap<PathKey, Arc<PathSeries>, foldhash::fast::RandomState>>,
}

/// Service, route, pool and server, as a request's record names them.
type PathKey = (Name, Option<Name>, Option<Name>, Option<Name>);

/// Handles on the series of one path (they share their values with the families).
struct PathSeries {
    labels: PathLabels,
    bytes_in: Counter,
    bytes_out: Counter,
    /// Created at the first timed response, as the family would.
    response_seconds: OnceLock<Histogram>,
    /// By status class (`STATUS_CLASSES`), created at the class's first request so that
    /// no series appears for a class never answered.
    requests: [OnceLock<Counter>; STATUS_CLASSES.len()],
}

/// Status 0: nothing was answered (a connection refused at `max_connections`).
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            sessions: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            response_seconds: Family::new_with_constructor(response_histogram),
            checks: Family::default(),
            check_seconds: Family::new_with_constructor(check_histogram),
            reloads: Family::default(),
            paths: Mutex::default(),
        }
    }
}

impl Metrics {
    /// One request ended (its access log line is written from the same record).
    pub fn request(&self, r: &Record) {
        let path = self.path(r);
        path.bytes_in.inc_by(r.bytes_in);
        path.bytes_out.inc_by(r.bytes_out);
        if let Some(t) = r.t_response {
            path.response_seconds
                .get_or_init(|| self.response_seconds.get_or_create(&path.labels).clone())
                .observe(t.as_secs_f64());
        }
        if r.is_layer4() {
            let labels = SessionLabels {
                path: path.labels.clone(),
                end: r.end,
            };
            self.sessions.get_or_create(&labels).inc();
            return;
        }
        let class = status_class(r.status);
        path.requests[class]
            .get_or_init(|| self.requests_counter(&path.labels, STATUS_CLASSES[class]))
            .inc();
    }

    fn path(&self, r: &Record) -> Arc<PathSeries> {
        let key: PathKey = (
            r.service.clone(),
            r.route.clone(),
            r.pool.clone(),
            r.server.clone(),
        );
        let mut paths = lock(&self.paths);
        if let Some(series) = paths.get(&key) {
            return series.clone();
        }
        let series = Arc::new(self.path_series(&key));
        paths.insert(key, series.clone());
        series
    }

    fn path_series(&self, (service, route, pool, server): &PathKey) -> PathSeries {
        let or_dash = |s: &Option<Name>| s.as_deref().unwrap_or("-").to_string();
        let labels = PathLabels {
            service: service.to_string(),
            route: or_dash(route),
            pool: or_dash(pool),
            server: or_dash(server),
        };
        PathSeries {
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
            response_seconds: OnceLock::new(),
            requests: Default::default(),
            labels,
        }
    }

    fn requests_counter(&self, path: &PathLabels, class: &'static str) -> Counter {
        let labels = RequestLabels {
            path: path.clone(),
            class,
        };
        self.requests.get_or_create(&labels).clone()
    }

    /// One health probe ran.
    pub fn check(&self, pool: &str, server: &str, checked: &Checked) {
        let labels = ServerLabels {
            pool: pool.to_string(),
            server: server.to_string(),
        };
        self.check_seconds
            .get_or_create(&labels)
            .observe(checked.latency.as_secs_f64());
        let result = if checked.result.is_ok() {
            "pass"
        } else {
            "fail"
        };
        self.checks
            .get_or_create(&CheckLabels {
                pool: labels.pool,
                server: labels.server,
                result,
            })
            .inc();
    }

    /// One reload was attempted.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "applied" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The Prometheus text exposition: the counters above and gauges read off `status`.
    pub fn render(&self, status: &Status, log_lines_dropped: u64) -> String {
        let mut registry = Registry::with_prefix("sluice");
        self.register_counters(&mut registry);
        register_gauges(&mut registry, status);
        registry.register(
            "access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            ConstCounter::new(log_lines_dropped),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn register_counters(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Requests by service, route, pool, server and status class",
            self.requests.clone(),
        );
        registry.register(
            "tcp_connections",
            "Layer 4 client connections by service, route, pool, server and how they ended",
            self.sessions.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes received from clients: request bodies, and everything on tcp services",
            self.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes sent to clients: response bodies, and everything on tcp services",
            self.bytes_out.clone(),
        );
        registry.register(
            "response_seconds",
            "Time from sending a request to the server to its response headers",
            self.response_seconds.clone(),
        );
        registry.register(
            "health_checks",
            "Health probes by result",
            self.checks.clone(),
        );
        registry.register(
            "health_check_seconds",
            "Health probe latency",
            self.check_seconds.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by outcome",
            self.reloads.clone(),
        );
    }
}

fn register_gauges(registry: &mut Registry, status: &Status) {
    let up = Family::<ServerLabels, Gauge>::default();
    let state = Family::<StateLabels, Gauge>::default();
    let weight = Family::<ServerLabels, Gauge>::default();
    let active = Family::<ServerLabels, Gauge>::default();
    let pinned = Family::<ServerLabels, Gauge>::default();
    let entries = Family::<PoolLabels, Gauge>::default();
    for pool in &status.pools {
        if let Some(n) = pool.stick_entries {
            let labels = PoolLabels {
                pool: pool.name.clone(),
            };
            entries.get_or_create(&labels).set(n as i64);
        }
        for s in &pool.servers {
            let labels = ServerLabels {
                pool: s.pool.clone(),
                server: s.server.clone(),
            };
            up.get_or_create(&labels).set(i64::from(s.up));
            weight.get_or_create(&labels).set(i64::from(s.weight));
            active.get_or_create(&labels).set(s.active as i64);
            pinned.get_or_create(&labels).set(s.pinned as i64);
            for name in ["ready", "drain", "maint"] {
                let labels = StateLabels {
                    pool: s.pool.clone(),
                    server: s.server.clone(),
                    state: name,
                };
                state.get_or_create(&labels).set(i64::from(s.state == name));
            }
        }
    }
    let connections = Gauge::<i64>::default();
    connections.set(status.connections as i64);
    registry.register("server_up", "1 when the server's health checks pass", up);
    registry.register(
        "server_state",
        "The operator's state for the server: 1 on the current one",
        state,
    );
    registry.register("server_weight", "The server's weight now", weight);
    registry.register("server_active_requests", "Requests in progress", active);
    registry.register(
        "server_pinned_connections",
        "Server connections owned by one client connection (NTLM/Negotiate)",
        pinned,
    );
    registry.register(
        "persistence_entries",
        "Entries in the pool's stick table",
        entries,
    );
    registry.register("client_connections", "Open client connections", connections);
}
