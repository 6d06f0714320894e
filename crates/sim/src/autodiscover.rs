//! The simulator's Autodiscover endpoints, as Exchange serves them: POX at
//! `/autodiscover/autodiscover.xml` and SOAP (`GetUserSettings`) at
//! `/autodiscover/autodiscover.svc`. A request naming a mailbox owner's address is answered with
//! that mailbox's settings: POX `EXCH` and `EXPR` protocols, or SOAP `InternalEwsUrl` and
//! `ExternalEwsUrl`, each carrying the simulator's own EWS URL. An unknown address gets POX error
//! 500 or SOAP `InvalidUser`; a setting we do not serve is listed in `UserSettingErrors`. The
//! caller authenticates as for EWS.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::EWS_PATH;
use crate::shared::{Resp, Sim, respond};
use taskbridge_ews::xml::XmlReader;

/// The path Exchange serves POX Autodiscover at (matched without regard to case).
pub const AUTODISCOVER_PATH: &str = "/autodiscover/autodiscover.xml";
/// The path of SOAP Autodiscover.
pub const SOAP_AUTODISCOVER_PATH: &str = "/autodiscover/autodiscover.svc";

const SOAP_NS: &str = "http://schemas.microsoft.com/exchange/2010/Autodiscover";

/// Whether `path` is one of the Autodiscover endpoints.
pub(crate) fn is_autodiscover_path(path: &str) -> bool {
    path.eq_ignore_ascii_case(AUTODISCOVER_PATH)
        || path.eq_ignore_ascii_case(SOAP_AUTODISCOVER_PATH)
}

const RESPONSE_NS: &str = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
const OUTLOOK_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// Answers one Autodiscover request (already authenticated) that arrived at `path` over
/// `scheme` with these `headers`.
pub(crate) fn answer(
    sim: &Sim,
    path: &str,
    scheme: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Resp {
    if path.eq_ignore_ascii_case(SOAP_AUTODISCOVER_PATH) {
        return answer_soap(sim, scheme, headers, body);
    }
    let Some(address) = requested_address(body) else {
        return xml(error_body("600", "Invalid Request"));
    };
    let Some(user) = sim.users.find(&address).filter(|u| !u.service) else {
        return xml(error_body("500", "The e-mail address cannot be found."));
    };
    let ews = ews_url(scheme, headers);
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

/// The EWS URL this request reached the simulator by.
fn ews_url(scheme: &str, headers: &HeaderMap) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}{EWS_PATH}")
}

/// Answers a SOAP GetUserSettings request.
fn answer_soap(sim: &Sim, scheme: &str, headers: &HeaderMap, body: &Bytes) -> Resp {
    let Some(request) = soap_request(body) else {
        return xml(soap_envelope(
            "<ErrorCode>InvalidRequest</ErrorCode><ErrorMessage>The request is not a \
             GetUserSettings request for one user.</ErrorMessage><UserResponses/>",
        ));
    };
    let user = match sim.users.find(&request.mailbox).filter(|u| !u.service) {
        None => format!(
            "<UserResponse><ErrorCode>InvalidUser</ErrorCode><ErrorMessage>Invalid user: \
             '{}'</ErrorMessage><RedirectTarget i:nil=\"true\"/><UserSettingErrors/>\
             <UserSettings/></UserResponse>",
            escape(&request.mailbox)
        ),
        Some(_) => {
            let ews = escape(&ews_url(scheme, headers));
            let (mut settings, mut errors) = (String::new(), String::new());
            for name in &request.settings {
                match name.as_str() {
                    "InternalEwsUrl" | "ExternalEwsUrl" => {
                        let _ = write!(
                            settings,
                            "<UserSetting i:type=\"StringSetting\"><Name>{name}</Name>\
                             <Value>{ews}</Value></UserSetting>"
                        );
                    }
                    other => {
                        let _ = write!(
                            errors,
                            "<UserSettingError><ErrorCode>SettingIsNotAvailable</ErrorCode>\
                             <ErrorMessage>User setting '{0}' is not available.</ErrorMessage>\
                             <SettingName>{0}</SettingName></UserSettingError>",
                            escape(other)
                        );
                    }
                }
            }
            format!(
                "<UserResponse><ErrorCode>NoError</ErrorCode><ErrorMessage>No error.</ErrorMessage>\
                 <RedirectTarget i:nil=\"true\"/><UserSettingErrors>{errors}</UserSettingErrors>\
                 <UserSettings>{settings}</UserSettings></UserResponse>"
            )
        }
    };
    xml(soap_envelope(&format!(
        "<ErrorCode>NoError</ErrorCode><ErrorMessage/><UserResponses>{user}</UserResponses>"
    )))
}

fn soap_envelope(response: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>\
         <a:Action s:mustUnderstand=\"1\">{SOAP_NS}/Autodiscover/GetUserSettingsResponse</a:Action>\
         </s:Header><s:Body><GetUserSettingsResponseMessage xmlns=\"{SOAP_NS}\">\
         <Response xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">{response}</Response>\
         </GetUserSettingsResponseMessage></s:Body></s:Envelope>"
    )
}

/// What a GetUserSettings request asks.
struct SoapRequest {
    mailbox: String,
    settings: Vec<String>,
}

/// The mailbox and settings of a GetUserSettings request for one user, if it is one.
fn soap_request(body: &[u8]) -> Option<SoapRequest> {
    let mut r = XmlReader::new(body);
    let envelope = r.root().ok()?;
    if envelope.local_name() != "Envelope" {
        return None;
    }
    let mut found = None;
    while let Some(part) = r.next_child(&envelope).ok()? {
        if part.local_name() != "Body" {
            r.skip(part).ok()?;
            continue;
        }
        while let Some(message) = r.next_child(&part).ok()? {
            if message.local_name() != "GetUserSettingsRequestMessage" {
                r.skip(message).ok()?;
                continue;
            }
            while let Some(request) = r.next_child(&message).ok()? {
                if request.local_name() != "Request" {
                    r.skip(request).ok()?;
                    continue;
                }
                let (mut mailboxes, mut settings) = (Vec::new(), Vec::new());
                while let Some(field) = r.next_child(&request).ok()? {
                    match field.local_name() {
                        "Users" => {
                            while let Some(user) = r.next_child(&field).ok()? {
                                while let Some(m) = r.next_child(&user).ok()? {
                                    if m.local_name() == "Mailbox" {
                                        mailboxes.push(r.text(m).ok()?.trim().to_string());
                                    } else {
                                        r.skip(m).ok()?;
                                    }
                                }
                            }
                        }
                        "RequestedSettings" => {
                            while let Some(s) = r.next_child(&field).ok()? {
                                settings.push(r.text(s).ok()?.trim().to_string());
                            }
                        }
                        _ => r.skip(field).ok()?,
                    }
                }
                // One user per request is what taskbridge and this simulator handle.
                if mailboxes.len() == 1 {
                    found = Some(SoapRequest {
                        mailbox: mailboxes.remove(0),
                        settings,
                    });
                }
            }
        }
    }
    found
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
