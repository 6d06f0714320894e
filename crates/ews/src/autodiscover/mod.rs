//! Autodiscover: the EWS URL of a mailbox, found from its e-mail address.
//!
//! Organisations with several sites give each mailbox the EWS endpoint of its site, and publish
//! which one through Autodiscover. Exchange serves it twice: SOAP (`GetUserSettings` at
//! `/autodiscover/autodiscover.svc`, Exchange 2010 and later, [`soap`]) and plain XML (POX, at
//! `/autodiscover/autodiscover.xml`, every version from 2007 to Subscription Edition, [`pox`]).
//! A client outside the domain tries these places in this order (the SCP lookup in Active
//! Directory is for domain-joined Outlook), SOAP before POX at each host as Microsoft advises
//! for web-service clients:
//!
//! 1. `https://<domain>/autodiscover/autodiscover.svc` (SOAP), then `.../autodiscover.xml` (POX);
//! 2. `https://autodiscover.<domain>/autodiscover/autodiscover.svc`, then `.../autodiscover.xml`;
//! 3. `http://autodiscover.<domain>/autodiscover/autodiscover.xml` (GET, no credentials): only a
//!    redirect to an `https` URL is taken, which is then POSTed to;
//! 4. the DNS SRV record `_autodiscover._tcp.<domain>` ([`dns`]): its targets, best first, with
//!    SOAP then POX at `https://<target>[:<port>]/autodiscover/`.
//!
//! A server may redirect to another URL (HTTP 302, POX `redirectUrl`, SOAP `RedirectUrl`) or to
//! another address (POX `redirectAddr`, SOAP `RedirectAddress`, which starts over with that
//! address's domain); at most ten redirects are followed, and only to `https` (a redirect to
//! plain HTTP could hand the credentials to anyone on the path). Every step has its own
//! time-out, so one dead host (the classic time-out in a large forest) costs that time-out and
//! no more; each step is reported.

pub mod dns;
pub mod pox;
pub mod soap;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::client::{EwsClient, EwsClientConfig};
use crate::error::Error;
use crate::transport::Auth;
use crate::transport::TlsConfig;
use crate::xml::{Element, XmlReader};

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
    /// The name servers asked for the SRV record; empty for those of `/etc/resolv.conf`.
    pub name_servers: Vec<std::net::SocketAddr>,
}

impl AutodiscoverSettings {
    /// Standard places, ten seconds a step.
    pub fn new(auth: Auth) -> Self {
        AutodiscoverSettings {
            auth,
            tls: TlsConfig::default(),
            step_timeout: Duration::from_secs(10),
            start_urls: Vec::new(),
            name_servers: Vec::new(),
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
    /// The Autodiscover URL that answered (SOAP or POX); [`soap_url_of`] gives the SOAP
    /// service beside it, which [`user_groupings`] asks.
    pub autodiscover_url: String,
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
    /// POST a SOAP GetUserSettings request here.
    Soap(String),
    /// POST the POX request here.
    Post(String),
    /// GET here without credentials, for a redirect to https.
    RedirectProbe(String),
    /// Look up the SRV record of this domain.
    Srv(String),
}

/// The standard places for `domain`, in order.
fn places(domain: &str) -> Vec<Place> {
    vec![
        Place::Soap(format!("https://{domain}/autodiscover/autodiscover.svc")),
        Place::Post(format!("https://{domain}/autodiscover/autodiscover.xml")),
        Place::Soap(format!(
            "https://autodiscover.{domain}/autodiscover/autodiscover.svc"
        )),
        Place::Post(format!(
            "https://autodiscover.{domain}/autodiscover/autodiscover.xml"
        )),
        Place::RedirectProbe(format!(
            "http://autodiscover.{domain}/autodiscover/autodiscover.xml"
        )),
        Place::Srv(domain.to_string()),
    ]
}

/// The kind of place a URL is: SOAP when it names the `.svc` service, POX otherwise.
fn place_for(url: String) -> Place {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    if path.to_ascii_lowercase().ends_with(".svc") {
        Place::Soap(url)
    } else {
        Place::Post(url)
    }
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

/// What an Autodiscover answer (POX or SOAP) says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The settings, with the internal EWS URL (POX `EXCH`, SOAP `InternalEwsUrl`), or else
    /// the external one (`EXPR`, `ExternalEwsUrl`): taskbridge runs inside the organisation.
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

pub(crate) fn text(r: &mut XmlReader<'_>, e: Element<'_>) -> Result<String, String> {
    r.text(e)
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
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
        settings.start_urls.iter().cloned().map(place_for).collect()
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
        let soap = matches!(place, Place::Soap(_));
        match place {
            Place::Srv(domain) => {
                let name = format!("_autodiscover._tcp.{domain}");
                let servers = if settings.name_servers.is_empty() {
                    dns::system_name_servers()
                } else {
                    settings.name_servers.clone()
                };
                let result = match dns::lookup_srv(&name, &servers, settings.step_timeout).await {
                    Err(e) => bounded(&format!("no answer: {e}")),
                    Ok(targets) if targets.is_empty() => "no SRV record".to_string(),
                    Ok(targets) => {
                        redirects += 1;
                        let mut found = Vec::new();
                        for t in targets.iter().rev() {
                            let host = if t.port == 443 {
                                t.target.clone()
                            } else {
                                format!("{}:{}", t.target, t.port)
                            };
                            queue.push_front(Place::Post(format!(
                                "https://{host}/autodiscover/autodiscover.xml"
                            )));
                            queue.push_front(Place::Soap(format!(
                                "https://{host}/autodiscover/autodiscover.svc"
                            )));
                            found.push(host);
                        }
                        found.reverse();
                        bounded(&format!("points to {}", found.join(", ")))
                    }
                };
                attempts.push(Attempt {
                    method: "SRV",
                    url: name,
                    result,
                });
            }
            Place::RedirectProbe(url) => {
                let result =
                    match tokio::time::timeout(settings.step_timeout, probe.get(&url).send()).await
                    {
                        Err(_) => format!("timed out after {:?}", settings.step_timeout),
                        Ok(Err(e)) => bounded(&format!("cannot connect: {}", error_chain(&e))),
                        Ok(Ok(response)) => match redirect_target(&response) {
                            Some(target) if target.starts_with("https://") => {
                                redirects += 1;
                                queue.push_front(place_for(target.clone()));
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
            Place::Post(url) | Place::Soap(url) => {
                let outcome = post(&url, &address, soap, settings).await;
                let result = match outcome {
                    Err(e) => bounded(&e),
                    Ok(Step::Redirect(target)) if target.starts_with("https://") => {
                        redirects += 1;
                        queue.push_front(place_for(target.clone()));
                        format!("redirected to {target}")
                    }
                    Ok(Step::Redirect(target)) => {
                        format!("redirect to {target} refused: only https is followed")
                    }
                    Ok(Step::Answer(Answer::Settings { ews_url: Some(ews) })) => {
                        attempts.push(Attempt {
                            method: "POST",
                            url: url.clone(),
                            result: format!("EWS URL {ews}"),
                        });
                        return Ok(Discovery {
                            address,
                            ews_url: ews,
                            autodiscover_url: url,
                            attempts,
                        });
                    }
                    Ok(Step::Answer(Answer::Settings { ews_url: None })) => {
                        "settings without an EWS URL".to_string()
                    }
                    Ok(Step::Answer(Answer::RedirectAddr(next))) => {
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
                    Ok(Step::Answer(Answer::RedirectUrl(target)))
                        if target.starts_with("https://") =>
                    {
                        redirects += 1;
                        queue.push_front(place_for(target.clone()));
                        format!("redirected to {}", bounded(&target))
                    }
                    Ok(Step::Answer(Answer::RedirectUrl(target))) => format!(
                        "redirect to {} refused: only https is followed",
                        bounded(&target)
                    ),
                    Ok(Step::Answer(Answer::Error { code, message })) => {
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

/// Users per GetUserSettings request: Exchange answers at most 100.
pub const MAX_USERS_PER_REQUEST: usize = 100;

/// The SOAP Autodiscover service beside an Autodiscover URL: the URL itself when it names the
/// `.svc` service, else `autodiscover.svc` in the same folder (a POX `autodiscover.xml`).
pub fn soap_url_of(url: &str) -> String {
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let path = &url[..path_end];
    if path.to_ascii_lowercase().ends_with(".svc") {
        return path.to_string();
    }
    match path.rfind('/') {
        Some(slash) if slash > path.find("://").map_or(0, |i| i + 2) => {
            format!("{}/autodiscover.svc", &path[..slash])
        }
        _ => format!(
            "{}/autodiscover/autodiscover.svc",
            path.trim_end_matches('/')
        ),
    }
}

/// Asks the SOAP Autodiscover service at `url` for the `GroupingInformation` and EWS URL of
/// every address (in requests of at most [`MAX_USERS_PER_REQUEST`] users, each with the
/// step time-out). Mailboxes with equal [`UserGrouping::key`](soap::UserGrouping::key)s can share a Mailbox server's
/// subscriptions (server affinity). One answer per address, in order; a request that fails
/// fails the whole lookup, since a partial grouping would anchor mailboxes wrongly.
pub async fn user_groupings(
    url: &str,
    addresses: &[String],
    settings: &AutodiscoverSettings,
) -> Result<Vec<soap::UserGrouping>, AutodiscoverError> {
    let mut out = Vec::with_capacity(addresses.len());
    let mut attempts = Vec::new();
    let client = autodiscover_client(url, settings).map_err(AutodiscoverError::Config)?;
    for batch in addresses.chunks(MAX_USERS_PER_REQUEST) {
        let body = soap::grouping_request_envelope(batch, url);
        let answered = tokio::time::timeout(
            settings.step_timeout,
            client.post_raw(Bytes::from(body), soap::ACTION),
        )
        .await;
        let result = match answered {
            Err(_) => Err(format!("timed out after {:?}", settings.step_timeout)),
            Ok(Err(e)) => Err(bounded(&e.to_string())),
            Ok(Ok(r)) if r.status == 200 => soap::read_groupings(&r.body, batch)
                .map_err(|e| bounded(&format!("not an Autodiscover answer: {e}"))),
            Ok(Ok(r)) => Err(format!("HTTP {}", r.status)),
        };
        match result {
            Ok(found) => out.extend(found),
            Err(result) => {
                attempts.push(Attempt {
                    method: "POST",
                    url: url.to_string(),
                    result,
                });
                return Err(AutodiscoverError::NotFound {
                    address: batch.first().cloned().unwrap_or_default(),
                    attempts,
                });
            }
        }
    }
    Ok(out)
}

/// A client for one Autodiscover URL, with the step time-out.
fn autodiscover_client(url: &str, settings: &AutodiscoverSettings) -> Result<EwsClient, String> {
    let mut config = EwsClientConfig::new(url, settings.auth.clone());
    config.tls = settings.tls.clone();
    config.timeouts.connect = settings.step_timeout;
    config.timeouts.request = settings.step_timeout;
    config.max_response_bytes = MAX_RESPONSE_BYTES;
    EwsClient::new(config).map_err(|e| e.to_string())
}

/// What one POST came to.
enum Step {
    Redirect(String),
    Answer(Answer),
}

async fn post(
    url: &str,
    address: &str,
    soap: bool,
    settings: &AutodiscoverSettings,
) -> Result<Step, String> {
    let client = autodiscover_client(url, settings)?;
    let (body, action) = if soap {
        (soap::request_envelope(address, url), soap::ACTION)
    } else {
        (pox::request_body(address), "Autodiscover")
    };
    let response = tokio::time::timeout(
        settings.step_timeout,
        client.post_raw(Bytes::from(body), action),
    )
    .await
    .map_err(|_| format!("timed out after {:?}", settings.step_timeout))?
    .map_err(|e| match e {
        Error::Unauthorized { detail, .. } => format!("credentials refused: {detail}"),
        other => other.to_string(),
    })?;
    match response.status {
        200 => if soap {
            soap::read_response(&response.body)
        } else {
            pox::read_response(&response.body)
        }
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
    fn the_soap_service_beside_an_autodiscover_url() {
        assert_eq!(
            soap_url_of("https://mail.contoso.com/autodiscover/autodiscover.xml"),
            "https://mail.contoso.com/autodiscover/autodiscover.svc"
        );
        assert_eq!(
            soap_url_of("https://mail.contoso.com/Autodiscover/Autodiscover.svc?x=1"),
            "https://mail.contoso.com/Autodiscover/Autodiscover.svc"
        );
        assert_eq!(
            soap_url_of("https://mail.contoso.com"),
            "https://mail.contoso.com/autodiscover/autodiscover.svc"
        );
    }

    #[test]
    fn the_standard_places_come_in_the_documented_order() {
        assert_eq!(
            places("contoso.com"),
            [
                Place::Soap("https://contoso.com/autodiscover/autodiscover.svc".into()),
                Place::Post("https://contoso.com/autodiscover/autodiscover.xml".into()),
                Place::Soap(
                    "https://autodiscover.contoso.com/autodiscover/autodiscover.svc".into()
                ),
                Place::Post(
                    "https://autodiscover.contoso.com/autodiscover/autodiscover.xml".into()
                ),
                Place::RedirectProbe(
                    "http://autodiscover.contoso.com/autodiscover/autodiscover.xml".into()
                ),
                Place::Srv("contoso.com".into()),
            ]
        );
    }

    #[test]
    fn a_url_naming_the_svc_service_is_tried_with_soap() {
        assert_eq!(
            place_for("https://mail.contoso.com/Autodiscover/Autodiscover.svc".into()),
            Place::Soap("https://mail.contoso.com/Autodiscover/Autodiscover.svc".into())
        );
        assert_eq!(
            place_for("https://mail.contoso.com/autodiscover/autodiscover.xml".into()),
            Place::Post("https://mail.contoso.com/autodiscover/autodiscover.xml".into())
        );
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(domain_of("ann@contoso.com").ok(), Some("contoso.com"));
        for bad in ["ann", "@contoso.com", "ann@", "ann@evil.com/x", "ann@a b"] {
            assert!(domain_of(bad).is_err(), "{bad}");
        }
    }
}
