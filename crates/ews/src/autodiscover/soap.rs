//! SOAP Autodiscover, `/autodiscover/autodiscover.svc`: the `GetUserSettings` operation that
//! Exchange 2010 and later serve beside POX, and that Microsoft advises web-service clients to
//! try first.
//!
//! We ask for the two settings taskbridge needs (`InternalEwsUrl`, `ExternalEwsUrl`) for one
//! user; for server affinity, also `GroupingInformation` for many users at once
//! ([`grouping_request_envelope`]). The answer carries an error code at two levels, the request's and the user's; a user
//! may be redirected to another address (`RedirectAddress`) or another server (`RedirectUrl`),
//! with the target in `RedirectTarget`. Elements are matched by namespace-free local name, as
//! for POX, because servers and the reference disagree on `http` and `https` in the namespace.

use super::{Answer, text};
use crate::xml::XmlReader;

/// The SOAP Autodiscover namespace.
pub(crate) const NS: &str = "http://schemas.microsoft.com/exchange/2010/Autodiscover";
/// The `SOAPAction` (and WS-Addressing action) of GetUserSettings.
pub const ACTION: &str =
    "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettings";

/// The settings asked for, internal first.
pub const REQUESTED_SETTINGS: [&str; 2] = ["InternalEwsUrl", "ExternalEwsUrl"];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The settings asked for to group mailboxes for server affinity: Microsoft's procedure puts
/// mailboxes with the same `GroupingInformation` and EWS URL in one group.
pub const GROUPING_SETTINGS: [&str; 3] =
    ["GroupingInformation", "ExternalEwsUrl", "InternalEwsUrl"];

/// The GetUserSettings request for `address`, sent to `url`.
pub fn request_envelope(address: &str, url: &str) -> String {
    envelope(&[address], &REQUESTED_SETTINGS, url)
}

/// The GetUserSettings request for the grouping settings of every address, sent to `url`.
pub fn grouping_request_envelope(addresses: &[String], url: &str) -> String {
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    envelope(&addresses, &GROUPING_SETTINGS, url)
}

fn envelope(addresses: &[&str], requested: &[&str], url: &str) -> String {
    let settings: String = requested
        .iter()
        .map(|s| format!("<a:Setting>{s}</a:Setting>"))
        .collect();
    let users: String = addresses
        .iter()
        .map(|a| {
            format!(
                "<a:User><a:Mailbox>{}</a:Mailbox></a:User>",
                quick_xml::escape::escape(*a)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:a=\"{NS}\" xmlns:wsa=\"http://www.w3.org/2005/08/addressing\">\
         <soap:Header>\
         <a:RequestedServerVersion>Exchange2010</a:RequestedServerVersion>\
         <wsa:Action>{ACTION}</wsa:Action>\
         <wsa:To>{url}</wsa:To>\
         </soap:Header>\
         <soap:Body><a:GetUserSettingsRequestMessage><a:Request>\
         <a:Users>{users}</a:Users>\
         <a:RequestedSettings>{settings}</a:RequestedSettings>\
         </a:Request></a:GetUserSettingsRequestMessage></soap:Body></soap:Envelope>",
        url = quick_xml::escape::escape(url),
    )
}

/// One mailbox's grouping settings, from a GetUserSettings answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserGrouping {
    /// The address asked for.
    pub address: String,
    /// `GroupingInformation`, when the server gave it.
    pub grouping: Option<String>,
    /// `ExternalEwsUrl`, else `InternalEwsUrl`.
    pub ews_url: Option<String>,
    /// The user's error code when it was not `NoError` (an unknown address, say).
    pub error: Option<String>,
}

impl UserGrouping {
    /// The group the mailbox belongs to: its `GroupingInformation` joined with its EWS URL, as
    /// Microsoft's procedure groups them; `None` without `GroupingInformation`.
    pub fn key(&self) -> Option<String> {
        let grouping = self.grouping.as_deref().filter(|g| !g.is_empty())?;
        Some(format!(
            "{grouping}|{}",
            self.ews_url.as_deref().unwrap_or_default()
        ))
    }
}

/// Reads the answer to [`grouping_request_envelope`] for `addresses`: Exchange answers one
/// `UserResponse` per user, in the order asked.
pub fn read_groupings(body: &[u8], addresses: &[String]) -> Result<Vec<UserGrouping>, String> {
    let (code, message, users) = match read_envelope(body)? {
        Envelope::Fault(fault) => return Err(format!("SOAP fault: {fault}")),
        Envelope::Answer(code, message, users) => (code, message, users),
    };
    if code != "NoError" {
        return Err(format!("Autodiscover error {code}: {message}"));
    }
    if users.len() != addresses.len() {
        return Err(format!(
            "{} user answers for {} users asked",
            users.len(),
            addresses.len()
        ));
    }
    Ok(addresses
        .iter()
        .zip(users)
        .map(|(address, user)| {
            let pick = |name: &str| {
                user.settings
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            UserGrouping {
                address: address.clone(),
                grouping: pick("GroupingInformation"),
                ews_url: pick("ExternalEwsUrl").or_else(|| pick("InternalEwsUrl")),
                error: (user.code != "NoError").then(|| user.code.clone()),
            }
        })
        .collect())
}

/// Reads a GetUserSettings response envelope.
pub fn read_response(body: &[u8]) -> Result<Answer, String> {
    let (code, message, users) = match read_envelope(body)? {
        Envelope::Fault(fault) => {
            return Ok(Answer::Error {
                code: "SOAP fault".into(),
                message: fault,
            });
        }
        Envelope::Answer(code, message, users) => (code, message, users),
    };
    let user = users.into_iter().next();
    if code != "NoError" {
        return Ok(Answer::Error { code, message });
    }
    let Some(user) = user else {
        return Err("a GetUserSettings answer without a UserResponse".into());
    };
    Ok(match user.code.as_str() {
        "NoError" => {
            let pick = |name: &str| {
                user.settings
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            Answer::Settings {
                ews_url: pick("InternalEwsUrl").or_else(|| pick("ExternalEwsUrl")),
            }
        }
        "RedirectAddress" => Answer::RedirectAddr(user.redirect.unwrap_or_default()),
        "RedirectUrl" => Answer::RedirectUrl(user.redirect.unwrap_or_default()),
        _ => Answer::Error {
            code: user.code,
            message: user.message,
        },
    })
}

/// A GetUserSettings response envelope: a SOAP fault, or the request's code and message with
/// every `UserResponse`.
enum Envelope {
    Fault(String),
    Answer(String, String, Vec<UserAnswer>),
}

fn read_envelope(body: &[u8]) -> Result<Envelope, String> {
    let mut r = XmlReader::new(body);
    let envelope = r.root().map_err(err)?;
    if envelope.local_name() != "Envelope" {
        return Err(format!(
            "expected a SOAP Envelope, found {}",
            envelope.name_lossy()
        ));
    }
    let mut answer = None;
    while let Some(part) = r.next_child(&envelope).map_err(err)? {
        if part.local_name() != "Body" {
            r.skip(part).map_err(err)?;
            continue;
        }
        while let Some(message) = r.next_child(&part).map_err(err)? {
            match message.local_name() {
                "GetUserSettingsResponseMessage" => {
                    while let Some(response) = r.next_child(&message).map_err(err)? {
                        if response.local_name() != "Response" {
                            r.skip(response).map_err(err)?;
                            continue;
                        }
                        answer = Some(read_response_part(&mut r, response)?);
                    }
                }
                "Fault" => {
                    let mut fault = String::new();
                    while let Some(f) = r.next_child(&message).map_err(err)? {
                        if f.local_name() == "faultstring" {
                            fault = text(&mut r, f)?;
                        } else {
                            r.skip(f).map_err(err)?;
                        }
                    }
                    return Ok(Envelope::Fault(fault));
                }
                _ => r.skip(message).map_err(err)?,
            }
        }
    }
    let Some((code, message, users)) = answer else {
        return Err("no GetUserSettingsResponseMessage in the body".into());
    };
    Ok(Envelope::Answer(code, message, users))
}

/// One `UserResponse`.
#[derive(Default)]
struct UserAnswer {
    code: String,
    message: String,
    redirect: Option<String>,
    settings: Vec<(String, String)>,
}

/// The request-level code and message of a `Response`, and its `UserResponse`s.
fn read_response_part(
    r: &mut XmlReader<'_>,
    response: crate::xml::Element<'_>,
) -> Result<(String, String, Vec<UserAnswer>), String> {
    let (mut code, mut message, mut users) = (String::new(), String::new(), Vec::new());
    while let Some(f) = r.next_child(&response).map_err(err)? {
        match f.local_name() {
            "ErrorCode" => code = text(r, f)?,
            "ErrorMessage" => message = text(r, f)?,
            "UserResponses" => {
                while let Some(u) = r.next_child(&f).map_err(err)? {
                    if u.local_name() != "UserResponse" {
                        r.skip(u).map_err(err)?;
                        continue;
                    }
                    users.push(read_user(r, u)?);
                }
            }
            _ => r.skip(f).map_err(err)?,
        }
    }
    Ok((code, message, users))
}

fn read_user(r: &mut XmlReader<'_>, u: crate::xml::Element<'_>) -> Result<UserAnswer, String> {
    let mut out = UserAnswer::default();
    while let Some(f) = r.next_child(&u).map_err(err)? {
        match f.local_name() {
            "ErrorCode" => out.code = text(r, f)?,
            "ErrorMessage" => out.message = text(r, f)?,
            "RedirectTarget" => out.redirect = Some(text(r, f)?).filter(|t| !t.is_empty()),
            "UserSettings" => {
                while let Some(setting) = r.next_child(&f).map_err(err)? {
                    if setting.local_name() != "UserSetting" {
                        r.skip(setting).map_err(err)?;
                        continue;
                    }
                    let (mut name, mut value) = (String::new(), String::new());
                    while let Some(p) = r.next_child(&setting).map_err(err)? {
                        match p.local_name() {
                            "Name" => name = text(r, p)?,
                            "Value" => value = text(r, p)?,
                            _ => r.skip(p).map_err(err)?,
                        }
                    }
                    if !value.is_empty() {
                        out.settings.push((name, value));
                    }
                }
            }
            _ => r.skip(f).map_err(err)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(user: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://www.w3.org/2005/08/addressing">
  <s:Header><a:Action s:mustUnderstand="1">http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettingsResponse</a:Action></s:Header>
  <s:Body>
    <GetUserSettingsResponseMessage xmlns="http://schemas.microsoft.com/exchange/2010/Autodiscover">
      <Response xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
        <ErrorCode>NoError</ErrorCode><ErrorMessage/>
        <UserResponses>{user}</UserResponses>
      </Response>
    </GetUserSettingsResponseMessage>
  </s:Body>
</s:Envelope>"#
        )
    }

    #[test]
    fn the_request_asks_for_both_ews_urls_of_one_user() {
        let body = request_envelope("a&b@contoso.com", "https://x/autodiscover/autodiscover.svc");
        assert!(body.contains("<a:Mailbox>a&amp;b@contoso.com</a:Mailbox>"));
        assert!(body.contains(
            "<a:Setting>InternalEwsUrl</a:Setting><a:Setting>ExternalEwsUrl</a:Setting>"
        ));
        assert!(body.contains(&format!("<wsa:Action>{ACTION}</wsa:Action>")));
        assert!(body.contains("<wsa:To>https://x/autodiscover/autodiscover.svc</wsa:To>"));
        // Well-formed, and read back by our own reader.
        let mut r = XmlReader::new(body.as_bytes());
        assert_eq!(r.root().expect("root").local_name(), "Envelope");
    }

    #[test]
    fn groupings_are_asked_for_many_users_and_read_in_order() {
        let asked = vec!["ann@contoso.com".to_string(), "x@contoso.com".to_string()];
        let body = grouping_request_envelope(&asked, "https://x/autodiscover/autodiscover.svc");
        assert!(body.contains(
            "<a:Users><a:User><a:Mailbox>ann@contoso.com</a:Mailbox></a:User>\
             <a:User><a:Mailbox>x@contoso.com</a:Mailbox></a:User></a:Users>"
        ));
        assert!(body.contains("<a:Setting>GroupingInformation</a:Setting>"));
        let both = answer(
            r#"<UserResponse><ErrorCode>NoError</ErrorCode><UserSettings>
            <UserSetting i:type="StringSetting"><Name>GroupingInformation</Name><Value>MBX01</Value></UserSetting>
            <UserSetting i:type="StringSetting"><Name>ExternalEwsUrl</Name><Value>https://mail.contoso.com/EWS/Exchange.asmx</Value></UserSetting>
            </UserSettings></UserResponse>
            <UserResponse><ErrorCode>InvalidUser</ErrorCode><ErrorMessage>Invalid user</ErrorMessage></UserResponse>"#,
        );
        let found = read_groupings(both.as_bytes(), &asked).expect("read");
        assert_eq!(found[0].address, "ann@contoso.com");
        assert_eq!(
            found[0].key().as_deref(),
            Some("MBX01|https://mail.contoso.com/EWS/Exchange.asmx")
        );
        assert_eq!(found[1].key(), None);
        assert_eq!(found[1].error.as_deref(), Some("InvalidUser"));
        // An answer for fewer users than asked cannot be paired with the addresses.
        assert!(read_groupings(both.as_bytes(), &asked[..1]).is_err());
    }

    #[test]
    fn settings_redirects_and_errors_are_read() {
        let settings = answer(
            r#"<UserResponse><ErrorCode>NoError</ErrorCode><ErrorMessage>No error.</ErrorMessage><RedirectTarget i:nil="true"/><UserSettingErrors/>
            <UserSettings><UserSetting i:type="StringSetting"><Name>ExternalEwsUrl</Name><Value>https://mail.contoso.com/EWS/Exchange.asmx</Value></UserSetting>
            <UserSetting i:type="StringSetting"><Name>InternalEwsUrl</Name><Value>https://mbx1.contoso.local/EWS/Exchange.asmx</Value></UserSetting></UserSettings></UserResponse>"#,
        );
        assert_eq!(
            read_response(settings.as_bytes()),
            Ok(Answer::Settings {
                ews_url: Some("https://mbx1.contoso.local/EWS/Exchange.asmx".into())
            })
        );
        let external_only = answer(
            r#"<UserResponse><ErrorCode>NoError</ErrorCode><UserSettings><UserSetting><Name>ExternalEwsUrl</Name><Value>https://mail.contoso.com/EWS/Exchange.asmx</Value></UserSetting></UserSettings></UserResponse>"#,
        );
        assert_eq!(
            read_response(external_only.as_bytes()),
            Ok(Answer::Settings {
                ews_url: Some("https://mail.contoso.com/EWS/Exchange.asmx".into())
            })
        );
        let redirect = answer(
            r#"<UserResponse><ErrorCode>RedirectAddress</ErrorCode><RedirectTarget>ann@fabrikam.com</RedirectTarget></UserResponse>"#,
        );
        assert_eq!(
            read_response(redirect.as_bytes()),
            Ok(Answer::RedirectAddr("ann@fabrikam.com".into()))
        );
        let invalid = answer(
            r#"<UserResponse><ErrorCode>InvalidUser</ErrorCode><ErrorMessage>Invalid user: 'x@contoso.com'</ErrorMessage></UserResponse>"#,
        );
        assert_eq!(
            read_response(invalid.as_bytes()),
            Ok(Answer::Error {
                code: "InvalidUser".into(),
                message: "Invalid user: 'x@contoso.com'".into()
            })
        );
        assert!(read_response(b"<html>login</html>").is_err());
        assert!(read_response(b"<Envelope><Body/></Envelope>").is_err());
    }
}
