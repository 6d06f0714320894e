//! The simulator's POX Autodiscover endpoint (`/autodiscover/autodiscover.xml`), as Exchange
//! serves it: a POST naming a mailbox owner's address is answered with that mailbox's settings,
//! whose `EXCH` and `EXPR` protocols carry the simulator's own EWS URL; an unknown address gets
//! Autodiscover error 500. The caller authenticates as for EWS.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::EWS_PATH;
use crate::server::{Resp, Sim, respond};
use taskbridge_ews::xml::XmlReader;

/// The path Exchange serves POX Autodiscover at (matched without regard to case).
pub const AUTODISCOVER_PATH: &str = "/autodiscover/autodiscover.xml";

const RESPONSE_NS: &str = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
const OUTLOOK_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// Answers one Autodiscover request (already authenticated) that arrived over `scheme` with
/// these `headers`.
pub(crate) fn answer(sim: &Sim, scheme: &str, headers: &HeaderMap, body: &Bytes) -> Resp {
    let Some(address) = requested_address(body) else {
        return xml(error_body("600", "Invalid Request"));
    };
    let Some(user) = sim.users.find(&address).filter(|u| !u.service) else {
        return xml(error_body("500", "The e-mail address cannot be found."));
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let ews = format!("{scheme}://{host}{EWS_PATH}");
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <Autodiscover xmlns=\"{RESPONSE_NS}\"><Response xmlns=\"{OUTLOOK_NS}\">\
         <User><DisplayName>{name}</DisplayName><AutoDiscoverSMTPAddress>{name}</AutoDiscoverSMTPAddress></User>\
         <Account><AccountType>email</AccountType><Action>settings</Action>\
         <Protocol><Type>EXCH</Type><Server>ews-sim</Server><ASUrl>{ews}</ASUrl><EwsUrl>{ews}</EwsUrl></Protocol>\
         <Protocol><Type>EXPR</Type><Server>ews-sim</Server><ASUrl>{ews}</ASUrl><EwsUrl>{ews}</EwsUrl></Protocol>\
         </Account></Response></Autodiscover>",
        name = escape(&user.smtp),
        ews = escape(&ews),
    );
    xml(out)
}

/// The `EMailAddress` of a POX request, if it is one.
fn requested_address(body: &[u8]) -> Option<String> {
    let mut r = XmlReader::new(body);
    let root = r.root().ok()?;
    if root.local_name() != "Autodiscover" {
        return None;
    }
    while let Some(request) = r.next_child(&root).ok()? {
        if request.local_name() != "Request" {
            r.skip(request).ok()?;
            continue;
        }
        while let Some(field) = r.next_child(&request).ok()? {
            if field.local_name() == "EMailAddress" {
                return Some(r.text(field).ok()?.trim().to_string());
            }
            r.skip(field).ok()?;
        }
    }
    None
}

fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <Autodiscover xmlns=\"{RESPONSE_NS}\"><Response>\
         <Error Time=\"00:00:00.0000000\" Id=\"1\"><ErrorCode>{code}</ErrorCode>\
         <Message>{message}</Message><DebugData /></Error></Response></Autodiscover>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(body: String) -> Resp {
    respond(StatusCode::OK, "text/xml; charset=utf-8", body)
}
