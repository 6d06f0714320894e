//! The simulator's Autodiscover endpoints, as Exchange serves them: POX at
//! `/autodiscover/autodiscover.xml` and SOAP (`GetUserSettings`) at
//! `/autodiscover/autodiscover.svc`. A request naming a mailbox owner's address is answered with
//! that mailbox's settings: POX `EXCH` and `EXPR` protocols, or SOAP `InternalEwsUrl` and
//! `ExternalEwsUrl`, each carrying the simulator's own EWS URL, and SOAP `GroupingInformation`
//! naming the mailbox's backend (`MBX01`, `MBX02`, ...; it follows a move through the admin
//! API). A SOAP request may name up to 100 users and gets one `UserResponse` each, in order. An unknown address gets POX error
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
             GetUserSettings request for 1 to 100 users.</ErrorMessage><UserResponses/>",
        ));
    };
    let ews = escape(&ews_url(scheme, headers));
    let users: String = request
        .mailboxes
        .iter()
        .map(|mailbox| user_response(sim, mailbox, &request.settings, &ews))
        .collect();
    xml(soap_envelope(&format!(
        "<ErrorCode>NoError</ErrorCode><ErrorMessage/><UserResponses>{users}</UserResponses>"
    )))
}

/// The `UserResponse` for one mailbox: the settings asked for that we serve, errors for the
/// rest. `GroupingInformation` names the mailbox's backend, so mailboxes of one backend share
/// a value (as Exchange groups mailboxes whose subscriptions one server can hold).
fn user_response(sim: &Sim, mailbox: &str, requested: &[String], ews: &str) -> String {
    let Some(user) = sim.users.find(mailbox).filter(|u| !u.service) else {
        return format!(
            "<UserResponse><ErrorCode>InvalidUser</ErrorCode><ErrorMessage>Invalid user: \
             '{}'</ErrorMessage><RedirectTarget i:nil=\"true\"/><UserSettingErrors/>\
             <UserSettings/></UserResponse>",
            escape(mailbox)
        );
    };
    let (mut settings, mut errors) = (String::new(), String::new());
    for name in requested {
        let value = match name.as_str() {
            "InternalEwsUrl" | "ExternalEwsUrl" => Some(ews.to_string()),
            "GroupingInformation" => Some(grouping_information(sim.backend_of(&user.smtp))),
            _ => None,
        };
        match value {
            Some(value) => {
                let _ = write!(
                    settings,
                    "<UserSetting i:type=\"StringSetting\"><Name>{name}</Name>\
                     <Value>{value}</Value></UserSetting>"
                );
            }
            None => {
                let _ = write!(
                    errors,
                    "<UserSettingError><ErrorCode>SettingIsNotAvailable</ErrorCode>\
                     <ErrorMessage>User setting '{0}' is not available.</ErrorMessage>\
                     <SettingName>{0}</SettingName></UserSettingError>",
                    escape(name)
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

/// The `GroupingInformation` of backend `n` (0-based): the backend's server name.
pub fn grouping_information(n: usize) -> String {
    format!("MBX{:02}", n + 1)
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

/// Most users one GetUserSettings request may name, as Exchange allows.
const MAX_USERS: usize = 100;

/// What a GetUserSettings request asks.
struct SoapRequest {
    mailboxes: Vec<String>,
    settings: Vec<String>,
}

/// The mailboxes and settings of a GetUserSettings request (1 to 100 users), if it is one.
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
                if (1..=MAX_USERS).contains(&mailboxes.len()) {
                    found = Some(SoapRequest {
                        mailboxes,
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
