//! The emulator's own admin endpoint (plain HTTP on loopback), to play Exchange's
//! administrator while sluice runs:
//!
//! | request | effect |
//! |---|---|
//! | `GET /components` | each workload's component state, one `name state` a line |
//! | `POST /components/<workload>/inactive` | takes the workload out (`Set-ServerComponentState ... -State Inactive`) |
//! | `POST /components/<workload>/active` | brings it back |
//! | `GET /counts` | what the server has served |

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use sluice_exchange::WORKLOADS;
use sluice_lab::backend::serve_http1;
use tokio::net::TcpListener;

use crate::reply::{self, Body};
use crate::server::Shared;
use crate::state::Counts;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            serve_http1(tcp, None, svc).await;
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["components"]) => reply::text(StatusCode::OK, components(shared)),
        (&Method::POST, ["components", workload, state]) => {
            let active = match *state {
                "active" => true,
                "inactive" => false,
                _ => return usage(StatusCode::BAD_REQUEST),
            };
            if !shared.components.set(workload, active) {
                return reply::text(
                    StatusCode::NOT_FOUND,
                    format!("no workload \"{workload}\"\n"),
                );
            }
            reply::text(StatusCode::OK, components(shared))
        }
        (&Method::GET, ["counts"]) => {
            reply::text(StatusCode::OK, counts(&shared.counters.snapshot()))
        }
        _ => usage(StatusCode::NOT_FOUND),
    }
}

fn components(shared: &Shared) -> String {
    WORKLOADS
        .iter()
        .map(|w| {
            let state = if shared.components.is_active(w.name) {
                "active"
            } else {
                "inactive"
            };
            format!("{} {state}\n", w.name)
        })
        .collect()
}

/// One `name value` a line.
pub fn counts(c: &Counts) -> String {
    let mut out: String = c.served.iter().map(|(w, n)| format!("{w} {n}\n")).collect();
    for (name, n) in [
        ("health_checks", c.health_checks),
        ("connections", c.connections),
        ("body_bytes", c.body_bytes),
        ("logins", c.logins),
        ("login_timeouts", c.login_timeouts),
        ("unknown_subscriptions", c.unknown_subscriptions),
    ] {
        out.push_str(&format!("{name} {n}\n"));
    }
    out
}

fn usage(status: StatusCode) -> Response<Body> {
    reply::text(
        status,
        "GET /components | POST /components/<workload>/active | POST /components/<workload>/inactive | GET /counts\n",
    )
}
