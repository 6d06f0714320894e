//! SOAP Autodiscover, `/autodiscover/autodiscover.svc`: the `GetUserSettings` operation that
//! Exchange 2010 and later serve beside POX, and that Microsoft advises web-service clients to
//! try first.
//!
//! We ask for the two settings taskbridge needs (`InternalEwsUrl`, `ExternalEwsUrl`) for one
//! user. The answer carries an error code at two levels, the request's and the user's; a user
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

/// The GetUserSettings request for `address`, sent to `url`.
pub fn request_envelope(address: &str, url: &str) -> String {
    let settings: String = REQUESTED_SETTINGS
        .iter()
        .map(|s| format!("<a:Setting>{s}</a:Setting>"))
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
         <a:Users><a:User><a:Mailbox>{address}</a:Mailbox></a:User></a:Users>\
         <a:RequestedSettings>{settings}</a:RequestedSettings>\
         </a:Request></a:GetUserSettingsRequestMessage></soap:Body></soap:Envelope>",
        url = quick_xml::escape::escape(url),
        address = quick_xml::escape::escape(address),
    )
}

/// Reads a GetUserSettings response envelope.
pub fn read_response(body: &[u8]) -> Result<Answer, String> {
    let mut r = XmlReader::new(body);
    let envelope = r.root().map_err(err)?;
    if envelope.local_name() != "Envelope" {
        return Err(format!(
            "expected a SOAP Envelope, found {}",
            envelope.name_lossy()
        ));
    }
    let mut request_error = None;
    let mut user: Option<UserAnswer> = None;
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
                        let (code, text_, first) = read_response_part(&mut r, response)?;
                        request_error = Some((code, text_));
                        user = first;
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
                    return Ok(Answer::Error {
                        code: "SOAP fault".into(),
                        message: fault,
                    });
                }
                _ => r.skip(message).map_err(err)?,
            }
        }
    }
    let Some((code, message)) = request_error else {
        return Err("no GetUserSettingsResponseMessage in the body".into());
    };
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

/// One `UserResponse`.
#[derive(Default)]
struct UserAnswer {
    code: String,
    message: String,
    redirect: Option<String>,
    settings: Vec<(String, String)>,
}

/// The request-level code and message of a `Response`, and its first `UserResponse`.
fn read_response_part(
    r: &mut XmlReader<'_>,
    response: crate::xml::Element<'_>,
) -> Result<(String, String, Option<UserAnswer>), String> {
    let (mut code, mut message, mut first) = (String::new(), String::new(), None);
    while let Some(f) = r.next_child(&response).map_err(err)? {
        match f.local_name() {
            "ErrorCode" => code = text(r, f)?,
            "ErrorMessage" => message = text(r, f)?,
            "UserResponses" => {
                while let Some(u) = r.next_child(&f).map_err(err)? {
                    if u.local_name() != "UserResponse" || first.is_some() {
                        r.skip(u).map_err(err)?;
                        continue;
                    }
                    first = Some(read_user(r, u)?);
                }
            }
            _ => r.skip(f).map_err(err)?,
        }
    }
    Ok((code, message, first))
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
