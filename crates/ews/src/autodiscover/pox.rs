//! POX ("plain old XML") Autodiscover, `/autodiscover/autodiscover.xml`: every on-premises
//! Exchange from 2007 to Subscription Edition serves it.
//!
//! Elements are matched by local name: Microsoft's published examples and real servers disagree
//! on the scheme (`http` or `https`) of the response namespaces, and the POX service has no
//! published schema to hold either to.

use super::{Answer, text};
use crate::xml::{Element, XmlReader};

/// The request namespace of POX Autodiscover.
const REQUEST_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006";
/// The response schema we accept (Outlook's, which carries `EwsUrl`).
pub(crate) const RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// The POX request body for `address`.
pub fn request_body(address: &str) -> String {
    let escaped = quick_xml::escape::escape(address);
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <Autodiscover xmlns=\"{REQUEST_NS}\"><Request>\
         <EMailAddress>{escaped}</EMailAddress>\
         <AcceptableResponseSchema>{RESPONSE_SCHEMA}</AcceptableResponseSchema>\
         </Request></Autodiscover>"
    )
}

/// Reads a POX Autodiscover response.
pub fn read_response(body: &[u8]) -> Result<Answer, String> {
    let mut r = XmlReader::new(body);
    let root = r.root().map_err(|e| e.to_string())?;
    if root.local_name() != "Autodiscover" {
        return Err(format!(
            "expected Autodiscover, found {}",
            root.name_lossy()
        ));
    }
    let mut action = None;
    let mut redirect_addr = None;
    let mut redirect_url = None;
    let mut ews = Vec::new();
    let mut error = None;
    while let Some(response) = r.next_child(&root).map_err(|e| e.to_string())? {
        if response.local_name() != "Response" {
            r.skip(response).map_err(|e| e.to_string())?;
            continue;
        }
        while let Some(part) = r.next_child(&response).map_err(|e| e.to_string())? {
            match part.local_name() {
                "Account" => {
                    while let Some(field) = r.next_child(&part).map_err(|e| e.to_string())? {
                        match field.local_name() {
                            "Action" => action = Some(text(&mut r, field)?),
                            "RedirectAddr" => redirect_addr = Some(text(&mut r, field)?),
                            "RedirectUrl" => redirect_url = Some(text(&mut r, field)?),
                            "Protocol" => {
                                let (kind, url) = protocol(&mut r, field)?;
                                if let Some(url) = url {
                                    ews.push((kind, url));
                                }
                            }
                            "Error" => error = Some(error_of(&mut r, field)?),
                            _ => r.skip(field).map_err(|e| e.to_string())?,
                        }
                    }
                }
                "Error" => error = Some(error_of(&mut r, part)?),
                _ => r.skip(part).map_err(|e| e.to_string())?,
            }
        }
    }
    if let Some((code, message)) = error {
        return Ok(Answer::Error { code, message });
    }
    match action.as_deref() {
        Some("redirectAddr") => redirect_addr
            .map(Answer::RedirectAddr)
            .ok_or_else(|| "redirectAddr without RedirectAddr".to_string()),
        Some("redirectUrl") => redirect_url
            .map(Answer::RedirectUrl)
            .ok_or_else(|| "redirectUrl without RedirectUrl".to_string()),
        _ => {
            // The internal URL first: taskbridge runs inside the organisation.
            let pick = |kind: &str| ews.iter().find(|(k, _)| k == kind).map(|(_, u)| u.clone());
            Ok(Answer::Settings {
                ews_url: pick("EXCH").or_else(|| pick("EXPR")),
            })
        }
    }
}

fn protocol(r: &mut XmlReader<'_>, e: Element<'_>) -> Result<(String, Option<String>), String> {
    let (mut kind, mut url) = (String::new(), None);
    while let Some(f) = r.next_child(&e).map_err(|e| e.to_string())? {
        match f.local_name() {
            "Type" => kind = text(r, f)?,
            "EwsUrl" => url = Some(text(r, f)?).filter(|u| !u.is_empty()),
            _ => r.skip(f).map_err(|e| e.to_string())?,
        }
    }
    Ok((kind, url))
}

fn error_of(r: &mut XmlReader<'_>, e: Element<'_>) -> Result<(String, String), String> {
    let (mut code, mut message) = (String::new(), String::new());
    while let Some(f) = r.next_child(&e).map_err(|e| e.to_string())? {
        match f.local_name() {
            "ErrorCode" => code = text(r, f)?,
            "Message" => message = text(r, f)?,
            _ => r.skip(f).map_err(|e| e.to_string())?,
        }
    }
    Ok((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_address_and_the_outlook_schema() {
        let body = request_body("a&b@contoso.com");
        assert!(body.contains("<EMailAddress>a&amp;b@contoso.com</EMailAddress>"));
        assert!(body.contains(RESPONSE_SCHEMA));
    }

    #[test]
    fn responses_in_either_namespace_spelling_are_read() {
        for scheme in ["http", "https"] {
            let body = format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="{scheme}://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="{scheme}://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <User><DisplayName>Ann</DisplayName></User>
    <Account><AccountType>email</AccountType><Action>settings</Action>
      <Protocol><Type>EXPR</Type><EwsUrl>https://mail.contoso.com/EWS/Exchange.asmx</EwsUrl></Protocol>
      <Protocol><Type>EXCH</Type><Server>MBX1</Server><EwsUrl>https://mbx1.contoso.local/EWS/Exchange.asmx</EwsUrl></Protocol>
    </Account>
  </Response>
</Autodiscover>"#
            );
            assert_eq!(
                read_response(body.as_bytes()),
                Ok(Answer::Settings {
                    ews_url: Some("https://mbx1.contoso.local/EWS/Exchange.asmx".into())
                })
            );
        }
        let redirect = br#"<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"><Account><Action>redirectAddr</Action><RedirectAddr>ann@fabrikam.com</RedirectAddr></Account></Response></Autodiscover>"#;
        assert_eq!(
            read_response(redirect),
            Ok(Answer::RedirectAddr("ann@fabrikam.com".into()))
        );
        let error = br#"<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response><Error Time="10:00:00" Id="1"><ErrorCode>500</ErrorCode><Message>The e-mail address cannot be found.</Message></Error></Response></Autodiscover>"#;
        assert_eq!(
            read_response(error),
            Ok(Answer::Error {
                code: "500".into(),
                message: "The e-mail address cannot be found.".into()
            })
        );
        assert!(read_response(b"<html>login</html>").is_err());
        assert!(read_response(b"not xml").is_err());
    }
}
