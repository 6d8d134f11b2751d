//! Exchange Web Services: `POST /EWS/Exchange.asmx` behind connection-bound authentication.
//!
//! Credentials are checked (by the server, for every Windows-authenticated workload)
//! before the body is read, so a request with `Expect: 100-continue` on an unauthenticated
//! connection gets its `401` without the body ever being sent (hyper sends `100 Continue`
//! only when the body is first read).
//!
//! Operations (found by element name): `Subscribe` creates a notification subscription,
//! `GetEvents` polls one, anything else answers as `GetFolder` on the caller's inbox,
//! naming the caller's mailbox. A subscription is kept in the server's mailbox store: the
//! array's from 2013 (any server finds it), the server's own on 2010 (only its creator).

use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::reply::{self, Body};
use crate::server::Shared;

const MAX_BODY: usize = 1024 * 1024;

pub(crate) async fn handle(shared: &Shared, user: &str, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::POST {
        match reply::read_body(shared, req.into_body(), MAX_BODY).await {
            Ok(body) => operation(shared, user, &String::from_utf8_lossy(&body)),
            Err(_) => reply::status(StatusCode::BAD_REQUEST),
        }
    } else {
        reply::text(StatusCode::OK, "Exchange Web Services\n")
    }
}

fn operation(shared: &Shared, user: &str, soap: &str) -> Response<Body> {
    if soap.contains("Subscribe>") || soap.contains("Subscribe ") {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = format!("{}-{}", shared.name, IDS.fetch_add(1, Ordering::Relaxed));
        shared.mailboxes.subscribe(id.clone());
        return reply::xml(envelope(&format!(
            "<m:SubscribeResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>\
             <m:SubscriptionId>{id}</m:SubscriptionId><m:Watermark>AQAAAA==</m:Watermark>\
             </m:SubscribeResponseMessage>"
        )));
    }
    if soap.contains("GetEvents") {
        let id = subscription_id(soap).unwrap_or_default();
        if !shared.mailboxes.knows(&id) {
            shared.counters.unknown_subscription();
            return reply::xml(envelope(
                "<m:GetEventsResponseMessage ResponseClass=\"Error\">\
                 <m:MessageText>The specified subscription was not found.</m:MessageText>\
                 <m:ResponseCode>ErrorSubscriptionNotFound</m:ResponseCode></m:GetEventsResponseMessage>",
            ));
        }
        return reply::xml(envelope(&format!(
            "<m:GetEventsResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>\
             <m:Notification><t:SubscriptionId>{id}</t:SubscriptionId><t:MoreEvents>false</t:MoreEvents>\
             <t:StatusEvent><t:Watermark>AQAAAA==</t:Watermark></t:StatusEvent></m:Notification>\
             </m:GetEventsResponseMessage>"
        )));
    }
    reply::xml(envelope(&format!(
        "<m:GetFolderResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>\
         <m:Folders><t:Folder><t:DisplayName>Inbox</t:DisplayName></t:Folder></m:Folders>\
         <t:Mailbox><t:EmailAddress>{}</t:EmailAddress></t:Mailbox></m:GetFolderResponseMessage>",
        escape(user)
    )))
}

fn envelope(message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\" \
         xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\"><s:Header>\
         <h:ServerVersionInfo xmlns:h=\"http://schemas.microsoft.com/exchange/services/2006/types\" MajorVersion=\"15\"/>\
         </s:Header><s:Body>{message}</s:Body></s:Envelope>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}

/// The text of the first `SubscriptionId` element.
pub fn subscription_id(xml: &str) -> Option<String> {
    let start = xml.find("SubscriptionId>")? + "SubscriptionId>".len();
    let len = xml[start..].find('<')?;
    Some(xml[start..start + len].to_string())
}

/// The mailbox a `GetFolder` answer names.
pub fn mailbox(xml: &str) -> Option<String> {
    let start = xml.find("<t:EmailAddress>")? + "<t:EmailAddress>".len();
    let len = xml[start..].find('<')?;
    Some(xml[start..start + len].to_string())
}

const REQUEST_HEAD: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<soap:Envelope \
     xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
     xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\" \
     xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\"><soap:Header>\
     <t:RequestServerVersion Version=\"Exchange2013\"/></soap:Header><soap:Body>";

/// A client's `GetFolder` request for the inbox.
pub fn get_folder_request() -> String {
    format!(
        "{REQUEST_HEAD}<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>\
         <m:FolderIds><t:DistinguishedFolderId Id=\"inbox\"/></m:FolderIds></m:GetFolder></soap:Body></soap:Envelope>"
    )
}

/// A client's pull `Subscribe` request for new mail.
pub fn subscribe_request() -> String {
    format!(
        "{REQUEST_HEAD}<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds>\
         <t:DistinguishedFolderId Id=\"inbox\"/></t:FolderIds><t:EventTypes><t:EventType>NewMailEvent</t:EventType>\
         </t:EventTypes><t:Timeout>30</t:Timeout></m:PullSubscriptionRequest></m:Subscribe></soap:Body></soap:Envelope>"
    )
}

/// A client's `GetEvents` poll of subscription `id`.
pub fn get_events_request(id: &str) -> String {
    format!(
        "{REQUEST_HEAD}<m:GetEvents><m:SubscriptionId>{id}</m:SubscriptionId>\
         <m:Watermark>AQAAAA==</m:Watermark></m:GetEvents></soap:Body></soap:Envelope>"
    )
}

/// Whether an EWS answer reports success.
pub fn succeeded(xml: &str) -> bool {
    xml.contains("ResponseClass=\"Success\"")
}
