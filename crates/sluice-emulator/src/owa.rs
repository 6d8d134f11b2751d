//! Outlook on the web and the Exchange admin center behind forms-based login.
//!
//! | request | answer |
//! |---|---|
//! | `GET /owa/auth/logon.aspx` | the login form |
//! | `POST /owa/auth.owa` (`username`, `password`, `destination`) | `302` to the destination with a sealed `cadata` cookie; `302` back to the form with `reason=2` when a field is empty |
//! | `GET /owa/logoff.owa`, `/ecp/logoff.aspx` | `302` to the form, cookie expired |
//! | anything else under `/owa` or `/ecp`, cookie this server opens | the page (HTML), or JSON for `service.svc` and other POSTs |
//! | ... with a cookie it cannot open | `440 Login Timeout` (the browser then goes back to the form) |
//! | ... without a cookie | `302` to the form for a page, `440` for a script request |

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use sluice_exchange::Workload;

use crate::reply::{self, Body};
use crate::server::Shared;

/// The session cookie (Exchange's `cadata`).
pub const SESSION_COOKIE: &str = "cadata";
pub const LOGON_PAGE: &str = "/owa/auth/logon.aspx";

/// The status Exchange answers when it cannot read the session.
pub fn login_timeout() -> StatusCode {
    StatusCode::from_u16(440).expect("440 is a valid status code")
}

pub(crate) async fn handle(
    shared: &Shared,
    workload: &Workload,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_ascii_lowercase();
    match path.as_str() {
        LOGON_PAGE => return reply::html(StatusCode::OK, logon_form()),
        "/owa/auth.owa" if req.method() == Method::POST => return login(shared, req).await,
        "/owa/logoff.owa" => return logged_off(LOGON_PAGE),
        "/ecp/logoff.aspx" => return logged_off("/owa/logoff.owa"),
        _ => {}
    }
    let script = req.method() == Method::POST || path.ends_with("/service.svc");
    let session = reply::cookie(req.headers(), SESSION_COOKIE);
    let user = match session.map(|value| shared.seal.open(value)) {
        Some(Some(user)) => user,
        Some(None) => {
            shared.counters.login_timeout();
            let mut response = reply::status(login_timeout());
            reply::header(&mut response, "set-cookie", &expired_cookie());
            return response;
        }
        None if script => return reply::status(login_timeout()),
        None => return to_logon(req.uri().path_and_query().map_or("/", |pq| pq.as_str())),
    };
    if script {
        return reply::with_type(
            StatusCode::OK,
            "application/json; charset=utf-8",
            reply::full(format!(
                "{{\"user\":\"{}\",\"server\":\"{}\",\"workload\":\"{}\"}}",
                user.replace(['"', '\\'], "_"),
                shared.name,
                workload.name
            )),
        );
    }
    reply::html(
        StatusCode::OK,
        format!(
            "<html><head><title>{title}</title></head><body>{title}: mailbox of {user}, \
             served by {server} (Exchange {version})</body></html>\n",
            title = workload.title,
            user = html_escape(&user),
            server = shared.name,
            version = shared.version,
        ),
    )
}

async fn login(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let Ok(form) = reply::read_body(shared, req.into_body(), 16 * 1024).await else {
        return reply::status(StatusCode::BAD_REQUEST);
    };
    let field = |k| reply::param(&form, k).filter(|v| !v.is_empty());
    let destination = field("destination").unwrap_or_else(|| "/owa/".into());
    let (Some(user), Some(_password)) = (field("username"), field("password")) else {
        return reply::redirect(
            StatusCode::FOUND,
            &format!("{LOGON_PAGE}?url={}&reason=2", encode(&destination)),
        );
    };
    shared.counters.login();
    let mut response = reply::redirect(StatusCode::FOUND, &destination);
    reply::header(
        &mut response,
        "set-cookie",
        &format!(
            "{SESSION_COOKIE}={}; path=/; secure; HttpOnly",
            shared.seal.seal(&user)
        ),
    );
    response
}

fn to_logon(original: &str) -> Response<Body> {
    reply::redirect(
        StatusCode::FOUND,
        &format!("{LOGON_PAGE}?url={}&reason=0", encode(original)),
    )
}

fn logged_off(location: &str) -> Response<Body> {
    let mut response = reply::redirect(StatusCode::FOUND, location);
    reply::header(&mut response, "set-cookie", &expired_cookie());
    response
}

fn expired_cookie() -> String {
    format!("{SESSION_COOKIE}=; expires=Thu, 01-Jan-1970 00:00:00 GMT; path=/; secure; HttpOnly")
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn logon_form() -> &'static str {
    "<html><head><title>Outlook</title></head><body>\n\
     <form action=\"/owa/auth.owa\" method=\"POST\">\n\
     <input type=\"hidden\" name=\"destination\" value=\"/owa/\">\n\
     <input name=\"username\"> <input name=\"password\" type=\"password\">\n\
     <input type=\"submit\" value=\"sign in\"></form></body></html>\n"
}
