//! Autodiscover: the EWS URL of a mailbox, found from its e-mail address.
//!
//! Organisations with several sites give each mailbox the EWS endpoint of its site, and publish
//! which one through Autodiscover. This module speaks the plain-XML ("POX") Autodiscover that
//! every on-premises Exchange from 2007 to Subscription Edition serves at
//! `/autodiscover/autodiscover.xml`, and tries the places a client outside the domain tries,
//! in this order (the SCP lookup in Active Directory is for domain-joined Outlook):
//!
//! 1. `https://<domain>/autodiscover/autodiscover.xml` (POST);
//! 2. `https://autodiscover.<domain>/autodiscover/autodiscover.xml` (POST);
//! 3. `http://autodiscover.<domain>/autodiscover/autodiscover.xml` (GET, no credentials): only a
//!    redirect to an `https` URL is taken, which is then POSTed to.
//!
//! A server may redirect to another URL (HTTP 302, or `Action` `redirectUrl`) or to another
//! address (`redirectAddr`, which starts over with that address's domain); at most ten
//! redirects are followed, and only to `https` (a redirect to plain HTTP could hand the
//! credentials to anyone on the path). Every step has its own time-out, so one dead host (the
//! classic time-out in a large forest) costs that time-out and no more; each step is reported.
//!
//! Elements are matched by local name: Microsoft's published examples and real servers disagree
//! on the scheme (`http` or `https`) of the response namespaces, and the POX service has no
//! published schema to hold either to.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::client::{EwsClient, EwsClientConfig};
use crate::error::Error;
use crate::transport::Auth;
use crate::transport::TlsConfig;
use crate::xml::{Element, XmlReader};

/// The request namespace of POX Autodiscover.
const REQUEST_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006";
/// The response schema we accept (Outlook's, which carries `EwsUrl`).
const RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";
/// Redirects followed before giving up, as the Autodiscover reference advises.
const MAX_REDIRECTS: usize = 10;
/// Largest Autodiscover answer read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How Autodiscover is done.
#[derive(Clone, Debug)]
pub struct AutodiscoverSettings {
    /// The credentials for the POST requests (Exchange asks for them, as for EWS).
    pub auth: Auth,
    /// Trusted certificates.
    pub tls: TlsConfig,
    /// Time-out of each step (connect, request and answer).
    pub step_timeout: Duration,
    /// Where to start instead of the standard places (a known Autodiscover URL); empty for the
    /// standard order.
    pub start_urls: Vec<String>,
}

impl AutodiscoverSettings {
    /// Standard places, ten seconds a step.
    pub fn new(auth: Auth) -> Self {
        AutodiscoverSettings {
            auth,
            tls: TlsConfig::default(),
            step_timeout: Duration::from_secs(10),
            start_urls: Vec::new(),
        }
    }
}

/// One step tried, and what came of it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Attempt {
    /// `POST` or `GET`.
    pub method: &'static str,
    /// The URL tried.
    pub url: String,
    /// What happened, in words.
    pub result: String,
}

/// What Autodiscover found.
#[derive(Clone, Debug, Serialize)]
pub struct Discovery {
    /// The address whose settings were asked for (after any `redirectAddr`).
    pub address: String,
    /// The EWS URL.
    pub ews_url: String,
    /// Every step, in order.
    pub attempts: Vec<Attempt>,
}

/// Why Autodiscover found no EWS URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutodiscoverError {
    /// Not an e-mail address.
    #[error("{0:?} is not an e-mail address")]
    InvalidAddress(String),
    /// The settings are not usable (bad CA file, say).
    #[error("{0}")]
    Config(String),
    /// Every place was tried and none gave an EWS URL.
    #[error("Autodiscover found no EWS URL for {address} ({} places tried)", attempts.len())]
    NotFound {
        /// The address last asked for.
        address: String,
        /// Every step, in order.
        attempts: Vec<Attempt>,
    },
}

impl AutodiscoverError {
    /// The steps tried, where there were any.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            AutodiscoverError::NotFound { attempts, .. } => attempts,
            _ => &[],
        }
    }
}

/// A place to try.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// POST the request here.
    Post(String),
    /// GET here without credentials, for a redirect to https.
    RedirectProbe(String),
}

/// The standard places for `domain`, in order.
fn places(domain: &str) -> Vec<Place> {
    vec![
        Place::Post(format!("https://{domain}/autodiscover/autodiscover.xml")),
        Place::Post(format!(
            "https://autodiscover.{domain}/autodiscover/autodiscover.xml"
        )),
        Place::RedirectProbe(format!(
            "http://autodiscover.{domain}/autodiscover/autodiscover.xml"
        )),
    ]
}

fn domain_of(address: &str) -> Result<&str, AutodiscoverError> {
    match address.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains(['/', '\\', '?', '#', ' ', ':']) =>
        {
            Ok(domain)
        }
        _ => Err(AutodiscoverError::InvalidAddress(address.to_string())),
    }
}

/// The POX request body for `address`.
pub fn request_body(address: &str) -> String {
    let mut escaped = String::with_capacity(address.len());
    for c in address.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <Autodiscover xmlns=\"{REQUEST_NS}\"><Request>\
         <EMailAddress>{escaped}</EMailAddress>\
         <AcceptableResponseSchema>{RESPONSE_SCHEMA}</AcceptableResponseSchema>\
         </Request></Autodiscover>"
    )
}

/// What a POX response says.
#[derive(Debug, PartialEq, Eq)]
pub enum PoxAnswer {
    /// The settings, with the EWS URL of the `EXCH` (internal) protocol, or else `EXPR`
    /// (external).
    Settings {
        /// The EWS URL.
        ews_url: Option<String>,
    },
    /// Ask again for another address.
    RedirectAddr(String),
    /// Ask again at another URL.
    RedirectUrl(String),
    /// An Autodiscover error.
    Error {
        /// `ErrorCode` (e.g. 500 for an unknown address).
        code: String,
        /// `Message`.
        message: String,
    },
}

/// Reads a POX Autodiscover response.
pub fn read_response(body: &[u8]) -> Result<PoxAnswer, String> {
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
        return Ok(PoxAnswer::Error { code, message });
    }
    match action.as_deref() {
        Some("redirectAddr") => redirect_addr
            .map(PoxAnswer::RedirectAddr)
            .ok_or_else(|| "redirectAddr without RedirectAddr".to_string()),
        Some("redirectUrl") => redirect_url
            .map(PoxAnswer::RedirectUrl)
            .ok_or_else(|| "redirectUrl without RedirectUrl".to_string()),
        _ => {
            // The internal URL first: taskbridge runs inside the organisation.
            let pick = |kind: &str| ews.iter().find(|(k, _)| k == kind).map(|(_, u)| u.clone());
            Ok(PoxAnswer::Settings {
                ews_url: pick("EXCH").or_else(|| pick("EXPR")),
            })
        }
    }
}

fn text(r: &mut XmlReader<'_>, e: Element<'_>) -> Result<String, String> {
    r.text(e)
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
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

/// Server text put into a report: one line, at most 200 characters.
fn bounded(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line.trim().to_string()
}

/// Finds the EWS URL of `address`.
pub async fn discover(
    address: &str,
    settings: &AutodiscoverSettings,
) -> Result<Discovery, AutodiscoverError> {
    let mut address = address.trim().to_string();
    let mut queue: VecDeque<Place> = if settings.start_urls.is_empty() {
        places(domain_of(&address)?).into()
    } else {
        domain_of(&address)?;
        settings
            .start_urls
            .iter()
            .cloned()
            .map(Place::Post)
            .collect()
    };
    let mut attempts = Vec::new();
    let mut redirects = 0usize;
    let probe = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.step_timeout)
        .build()
        .map_err(|e| AutodiscoverError::Config(e.to_string()))?;
    while let Some(place) = queue.pop_front() {
        if redirects > MAX_REDIRECTS {
            attempts.push(Attempt {
                method: "-",
                url: String::new(),
                result: format!("stopped after {MAX_REDIRECTS} redirects"),
            });
            break;
        }
        match place {
            Place::RedirectProbe(url) => {
                let result =
                    match tokio::time::timeout(settings.step_timeout, probe.get(&url).send()).await
                    {
                        Err(_) => format!("timed out after {:?}", settings.step_timeout),
                        Ok(Err(e)) => bounded(&format!("cannot connect: {}", error_chain(&e))),
                        Ok(Ok(response)) => match redirect_target(&response) {
                            Some(target) if target.starts_with("https://") => {
                                redirects += 1;
                                queue.push_front(Place::Post(target.clone()));
                                format!("redirected to {target}")
                            }
                            Some(target) => {
                                format!("redirect to {target} refused: only https is followed")
                            }
                            None => {
                                format!("HTTP {} without a redirect", response.status().as_u16())
                            }
                        },
                    };
                attempts.push(Attempt {
                    method: "GET",
                    url,
                    result,
                });
            }
            Place::Post(url) => {
                let outcome = post(&url, &address, settings).await;
                let result = match outcome {
                    Err(e) => bounded(&e),
                    Ok(Step::Redirect(target)) if target.starts_with("https://") => {
                        redirects += 1;
                        queue.push_front(Place::Post(target.clone()));
                        format!("redirected to {target}")
                    }
                    Ok(Step::Redirect(target)) => {
                        format!("redirect to {target} refused: only https is followed")
                    }
                    Ok(Step::Answer(PoxAnswer::Settings { ews_url: Some(ews) })) => {
                        attempts.push(Attempt {
                            method: "POST",
                            url,
                            result: format!("EWS URL {ews}"),
                        });
                        return Ok(Discovery {
                            address,
                            ews_url: ews,
                            attempts,
                        });
                    }
                    Ok(Step::Answer(PoxAnswer::Settings { ews_url: None })) => {
                        "settings without an EWS URL".to_string()
                    }
                    Ok(Step::Answer(PoxAnswer::RedirectAddr(next))) => {
                        redirects += 1;
                        let result = format!("redirected to the address {}", bounded(&next));
                        match domain_of(&next) {
                            Ok(domain) => {
                                queue = places(domain).into();
                                address = next;
                            }
                            Err(_) => {
                                attempts.push(Attempt {
                                    method: "POST",
                                    url,
                                    result: format!("{result}, which is not an address"),
                                });
                                continue;
                            }
                        }
                        result
                    }
                    Ok(Step::Answer(PoxAnswer::RedirectUrl(target)))
                        if target.starts_with("https://") =>
                    {
                        redirects += 1;
                        queue.push_front(Place::Post(target.clone()));
                        format!("redirected to {}", bounded(&target))
                    }
                    Ok(Step::Answer(PoxAnswer::RedirectUrl(target))) => format!(
                        "redirect to {} refused: only https is followed",
                        bounded(&target)
                    ),
                    Ok(Step::Answer(PoxAnswer::Error { code, message })) => {
                        bounded(&format!("Autodiscover error {code}: {message}"))
                    }
                };
                attempts.push(Attempt {
                    method: "POST",
                    url,
                    result,
                });
            }
        }
    }
    Err(AutodiscoverError::NotFound { address, attempts })
}

/// What one POST came to.
enum Step {
    Redirect(String),
    Answer(PoxAnswer),
}

async fn post(url: &str, address: &str, settings: &AutodiscoverSettings) -> Result<Step, String> {
    let mut config = EwsClientConfig::new(url, settings.auth.clone());
    config.tls = settings.tls.clone();
    config.timeouts.connect = settings.step_timeout;
    config.timeouts.request = settings.step_timeout;
    config.max_response_bytes = MAX_RESPONSE_BYTES;
    let client = EwsClient::new(config).map_err(|e| e.to_string())?;
    let body = Bytes::from(request_body(address));
    let response = tokio::time::timeout(settings.step_timeout, client.post_raw(body))
        .await
        .map_err(|_| format!("timed out after {:?}", settings.step_timeout))?
        .map_err(|e| match e {
            Error::Unauthorized { detail, .. } => format!("credentials refused: {detail}"),
            other => other.to_string(),
        })?;
    match response.status {
        200 => read_response(&response.body)
            .map(Step::Answer)
            .map_err(|e| format!("not an Autodiscover answer: {e}")),
        301 | 302 | 303 | 307 | 308 => response
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| Step::Redirect(l.to_string()))
            .ok_or_else(|| format!("HTTP {} without a Location", response.status)),
        401 => Err("credentials refused (HTTP 401)".into()),
        status => Err(format!("HTTP {status}")),
    }
}

fn redirect_target(response: &reqwest::Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_places_come_in_the_documented_order() {
        assert_eq!(
            places("contoso.com"),
            [
                Place::Post("https://contoso.com/autodiscover/autodiscover.xml".into()),
                Place::Post(
                    "https://autodiscover.contoso.com/autodiscover/autodiscover.xml".into()
                ),
                Place::RedirectProbe(
                    "http://autodiscover.contoso.com/autodiscover/autodiscover.xml".into()
                ),
            ]
        );
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(domain_of("ann@contoso.com").ok(), Some("contoso.com"));
        for bad in ["ann", "@contoso.com", "ann@", "ann@evil.com/x", "ann@a b"] {
            assert!(domain_of(bad).is_err(), "{bad}");
        }
    }

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
                Ok(PoxAnswer::Settings {
                    ews_url: Some("https://mbx1.contoso.local/EWS/Exchange.asmx".into())
                })
            );
        }
        let redirect = br#"<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"><Account><Action>redirectAddr</Action><RedirectAddr>ann@fabrikam.com</RedirectAddr></Account></Response></Autodiscover>"#;
        assert_eq!(
            read_response(redirect),
            Ok(PoxAnswer::RedirectAddr("ann@fabrikam.com".into()))
        );
        let error = br#"<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response><Error Time="10:00:00" Id="1"><ErrorCode>500</ErrorCode><Message>The e-mail address cannot be found.</Message></Error></Response></Autodiscover>"#;
        assert_eq!(
            read_response(error),
            Ok(PoxAnswer::Error {
                code: "500".into(),
                message: "The e-mail address cannot be found.".into()
            })
        );
        assert!(read_response(b"<html>login</html>").is_err());
        assert!(read_response(b"not xml").is_err());
    }
}
