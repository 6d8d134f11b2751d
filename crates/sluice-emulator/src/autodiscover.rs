//! Autodiscover: the POX answer (`POST /Autodiscover/Autodiscover.xml`) pointing at this
//! server's namespace, and the anonymous JSON form (`/autodiscover/autodiscover.json`).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::reply::{self, Body};
use crate::server::Shared;

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&shared.fqdn)
        .to_string();
    if req
        .uri()
        .path()
        .to_ascii_lowercase()
        .contains("autodiscover.json")
    {
        return reply::with_type(
            StatusCode::OK,
            "application/json; charset=utf-8",
            reply::full(format!(
                "{{\"Protocol\":\"AutodiscoverV1\",\"Url\":\"https://{host}/Autodiscover/Autodiscover.xml\"}}"
            )),
        );
    }
    let _ = reply::read_body(shared, req.into_body(), 64 * 1024).await;
    reply::xml(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\
         <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\
         <Account><AccountType>email</AccountType><Action>settings</Action>\
         <Protocol><Type>EXPR</Type><ASUrl>https://{host}/EWS/Exchange.asmx</ASUrl></Protocol>\
         <Protocol><Type>WEB</Type><OWAUrl AuthenticationMethod=\"Fba\">https://{host}/owa</OWAUrl></Protocol>\
         </Account></Response></Autodiscover>\n"
    ))
}
