//! The SOAP 1.1 envelope around every EWS message: headers, body and faults.
//!
//! Reading goes by namespace and local name, so `soap:`, `s:`, `soap11:`, `SOAP-ENV:` and a
//! default namespace are all the same envelope. Writing always uses `soap:`, `t:` and `m:`.

use std::time::Duration;

use crate::types::MessageXml;
use crate::xml::{
    DecodeError, Element, NS_ERRORS, NS_MESSAGES, NS_SOAP, NS_TYPES, Ns, XmlElement, XmlReader,
    XmlWriter,
};

/// Largest message taskbridge decodes unless told otherwise (64 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// `t:ExchangeVersionType` and the `t:ServerVersionInfo` header, generated from `wsdl/`.
pub use crate::types::generated::{ExchangeVersion, ServerVersionInfo};

impl std::fmt::Display for ServerVersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        write!(
            f,
            "{}.{}.{}.{}",
            n(self.major_version),
            n(self.minor_version),
            n(self.major_build_number),
            n(self.minor_build_number)
        )?;
        if let Some(v) = &self.version {
            write!(f, " ({v})")?;
        }
        Ok(())
    }
}

// Hand-written: `t:ConnectingSIDType` is a choice of four elements (a Rust enum, which
// `xml_struct!` cannot express).
/// Whom a request acts for (`t:ConnectingSIDType`).
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/connectingsid>.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Impersonation {
    /// By primary SMTP address (what taskbridge sends).
    PrimarySmtpAddress(String),
    /// By any SMTP address of the mailbox.
    SmtpAddress(String),
    /// By user principal name.
    PrincipalName(String),
    /// By security identifier.
    Sid(String),
}

impl Impersonation {
    /// The address or name given.
    pub fn value(&self) -> &str {
        match self {
            Impersonation::PrimarySmtpAddress(v)
            | Impersonation::SmtpAddress(v)
            | Impersonation::PrincipalName(v)
            | Impersonation::Sid(v) => v,
        }
    }

    fn element(&self) -> &'static str {
        match self {
            Impersonation::PrimarySmtpAddress(_) => "t:PrimarySmtpAddress",
            Impersonation::SmtpAddress(_) => "t:SmtpAddress",
            Impersonation::PrincipalName(_) => "t:PrincipalName",
            Impersonation::Sid(_) => "t:SID",
        }
    }
}

// Hand-written: of `t:TimeZoneDefinitionType` (periods, transitions) taskbridge sends only the
// `Id` attribute and reads nothing else; the subset keeps the definition whole, so a generated
// type would carry the rules taskbridge never uses.
/// The time zone the server interprets and writes local times in (`t:TimeZoneContext`).
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/timezonecontext>.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimeZoneContext {
    /// A Windows time zone id, e.g. `W. Europe Standard Time`.
    pub id: String,
}

// Hand-written: the SOAP header is not a schema type; its children are each operation's header
// parts in the WSDL (`RequestServerVersion`, `ExchangeImpersonation`, `TimeZoneContext`).
/// The SOAP headers of a request.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestHeader {
    /// `RequestServerVersion`.
    pub version: ExchangeVersion,
    /// `ExchangeImpersonation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation: Option<Impersonation>,
    /// `TimeZoneContext`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZoneContext>,
}

/// The SOAP headers found on a message taskbridge read.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Header {
    /// `RequestServerVersion` (requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_server_version: Option<ExchangeVersion>,
    /// `ExchangeImpersonation` (requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation: Option<Impersonation>,
    /// `TimeZoneContext` (requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZoneContext>,
    /// `ServerVersionInfo` (responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<ServerVersionInfo>,
}

/// A SOAP 1.1 fault, with the EWS details Exchange puts in `detail`.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/ews-throttling-in-exchange>.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Fault {
    /// `faultcode`, without its prefix (e.g. `ErrorServerBusy`, `Client`).
    pub fault_code: String,
    /// `faultstring`.
    pub fault_string: String,
    /// `faultactor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_actor: Option<String>,
    /// `e:ResponseCode` from the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<crate::types::ResponseCode>,
    /// `e:Message` from the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `e:Line` (schema validation faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// `e:Position` (schema validation faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// `t:MessageXml` from the detail.
    #[serde(skip_serializing_if = "crate::xml::is_absent")]
    pub message_xml: MessageXmlList,
}

/// The `MessageXml` of a fault, empty when absent.
pub type MessageXmlList = Vec<crate::types::MessageXmlEntry>;

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.fault_code, self.fault_string)?;
        if let (Some(line), Some(pos)) = (self.line, self.position) {
            write!(f, " (line {line}, position {pos})")?;
        }
        if let Some(back_off) = self.back_off() {
            write!(f, " (back off {} ms)", back_off.as_millis())?;
        }
        Ok(())
    }
}

impl Fault {
    /// `BackOffMilliseconds`, when the fault is ErrorServerBusy.
    pub fn back_off(&self) -> Option<Duration> {
        MessageXml(self.message_xml.clone()).back_off()
    }

    /// Whether this is ErrorServerBusy.
    pub fn is_server_busy(&self) -> bool {
        self.response_code == Some(crate::types::ResponseCode::ErrorServerBusy)
            || self.fault_code == "ErrorServerBusy"
    }

    /// The fault Exchange sends when it throttles a caller.
    pub fn server_busy(back_off: Duration) -> Self {
        Fault {
            fault_code: "ErrorServerBusy".into(),
            fault_string: "The server cannot service this request right now. Try again later."
                .into(),
            response_code: Some(crate::types::ResponseCode::ErrorServerBusy),
            message: Some(
                "The server cannot service this request right now. Try again later.".into(),
            ),
            message_xml: MessageXml::with_back_off(back_off).0,
            ..Fault::default()
        }
    }

    /// The fault Exchange sends for a request that breaks the schema.
    pub fn schema_validation(line: u32, position: u32, violation: &str) -> Self {
        let message = format!("The request failed schema validation: {violation}");
        Fault {
            fault_code: "ErrorSchemaValidation".into(),
            fault_string: message.clone(),
            response_code: Some(crate::types::ResponseCode::ErrorSchemaValidation),
            message: Some(message),
            line: Some(line),
            position: Some(position),
            message_xml: vec![
                entry("LineNumber", line.to_string()),
                entry("LinePosition", position.to_string()),
                entry("Violation", violation.to_string()),
            ],
            ..Fault::default()
        }
    }

    /// A client fault with a response code, e.g. for a request the server cannot handle.
    pub fn client(code: crate::types::ResponseCode, message: &str) -> Self {
        Fault {
            fault_code: code.as_str().to_string(),
            fault_string: message.to_string(),
            response_code: Some(code),
            message: Some(message.to_string()),
            ..Fault::default()
        }
    }

    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut fault = Fault::default();
        while let Some(child) = r.next_child(&e)? {
            match child.local_name() {
                "faultcode" => {
                    let code = r.text(child)?;
                    let code = code.trim();
                    // The prefix of a QName is meaningless without its binding; the local part
                    // is what Exchange and SOAP stacks put their code in.
                    fault.fault_code = code.rsplit(':').next().unwrap_or(code).to_string();
                }
                "faultstring" => fault.fault_string = r.text(child)?.into_owned(),
                "faultactor" => fault.fault_actor = Some(r.text(child)?.into_owned()),
                "detail" => fault.read_detail(r, child)?,
                _ => r.skip(child)?,
            }
        }
        Ok(fault)
    }

    fn read_detail<'i>(
        &mut self,
        r: &mut XmlReader<'i>,
        e: Element<'i>,
    ) -> Result<(), DecodeError> {
        use crate::xml::XmlText;
        while let Some(child) = r.next_child(&e)? {
            match child.local_name() {
                "ResponseCode" => {
                    let text = r.text(child)?;
                    self.response_code = crate::types::ResponseCode::from_text(text.trim()).ok();
                }
                "Message" => self.message = Some(r.text(child)?.into_owned()),
                "Line" => self.line = r.text(child)?.trim().parse().ok(),
                "Position" => self.position = r.text(child)?.trim().parse().ok(),
                "MessageXml" => self.message_xml = MessageXml::read(r, child)?.0,
                _ => r.skip(child)?,
            }
        }
        Ok(())
    }

    fn write(&self, w: &mut XmlWriter) {
        w.tag("soap:Fault").children(|w| {
            let code = if self.fault_code.starts_with("Error") {
                format!("t:{}", self.fault_code)
            } else {
                format!("soap:{}", self.fault_code)
            };
            w.text_element("faultcode", &code);
            w.tag("faultstring")
                .attr("xml:lang", "en-US")
                .text(&self.fault_string);
            if let Some(actor) = &self.fault_actor {
                w.text_element("faultactor", actor);
            }
            w.tag("detail").children(|w| {
                if let Some(code) = &self.response_code {
                    w.tag("e:ResponseCode")
                        .attr("xmlns:e", NS_ERRORS)
                        .text(code.as_str());
                }
                if let Some(message) = &self.message {
                    w.tag("e:Message").attr("xmlns:e", NS_ERRORS).text(message);
                }
                if let Some(line) = self.line {
                    w.tag("e:Line")
                        .attr("xmlns:e", NS_ERRORS)
                        .text(&line.to_string());
                }
                if let Some(pos) = self.position {
                    w.tag("e:Position")
                        .attr("xmlns:e", NS_ERRORS)
                        .text(&pos.to_string());
                }
                if !self.message_xml.is_empty() {
                    w.tag("t:MessageXml").children(|w| {
                        for entry in &self.message_xml {
                            w.tag("t:Value")
                                .attr("Name", &entry.name)
                                .text(&entry.value);
                        }
                    });
                }
            });
        });
    }
}

fn entry(name: &str, value: String) -> crate::types::MessageXmlEntry {
    crate::types::MessageXmlEntry {
        name: name.into(),
        value,
    }
}

/// What a SOAP body held: a fault or the expected content.
#[derive(Debug)]
pub enum Body<T> {
    /// A SOAP fault.
    Fault(Box<Fault>),
    /// The body's element, decoded.
    Content(T),
}

/// A decoded envelope.
#[derive(Debug)]
pub struct Envelope<T> {
    /// The headers taskbridge knows.
    pub header: Header,
    /// The body.
    pub body: Body<T>,
}

/// Decodes a SOAP envelope, handing the first element of its body to `body` (unless it is a
/// fault, which is decoded here).
pub fn read_envelope<'i, T>(
    input: &'i [u8],
    max_bytes: usize,
    body: impl FnOnce(&mut XmlReader<'i>, Element<'i>) -> Result<T, DecodeError>,
) -> Result<Envelope<T>, DecodeError> {
    read_envelope_with(input, max_bytes, false, body)
}

/// Like [`read_envelope`], optionally in strict mode (see [`XmlReader::set_strict`]).
pub fn read_envelope_with<'i, T>(
    input: &'i [u8],
    max_bytes: usize,
    strict: bool,
    body: impl FnOnce(&mut XmlReader<'i>, Element<'i>) -> Result<T, DecodeError>,
) -> Result<Envelope<T>, DecodeError> {
    if input.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: max_bytes,
        });
    }
    let mut r = XmlReader::new(input);
    r.set_strict(strict);
    let root = r.root()?;
    if !root.is(Ns::Soap, "Envelope") {
        return Err(unexpected("a SOAP Envelope", &root));
    }
    let mut header = Header::default();
    let mut content = None;
    let mut body_fn = Some(body);
    while let Some(child) = r.next_child(&root)? {
        if child.is(Ns::Soap, "Header") {
            read_header(&mut r, child, &mut header)?;
        } else if child.is(Ns::Soap, "Body") && content.is_none() {
            let body_el = child;
            let first = match r.next_child(&body_el)? {
                Some(el) if el.ns() == Ns::Soap && el.local_name() == "Fault" => {
                    Some(Body::Fault(Box::new(Fault::read(&mut r, el)?)))
                }
                Some(el) => {
                    let f = body_fn.take().expect("the body is decoded once");
                    Some(Body::Content(f(&mut r, el)?))
                }
                None => None,
            };
            let Some(first) = first else {
                return Err(DecodeError::MissingElement {
                    path: "Envelope/Body".into(),
                    element: "(operation element)".into(),
                });
            };
            // Anything after the first body element is not EWS; skip it.
            while let Some(rest) = r.next_child(&body_el)? {
                r.skip(rest)?;
            }
            content = Some(first);
        } else {
            r.skip(child)?;
        }
    }
    r.finish()?;
    let body = content.ok_or_else(|| DecodeError::MissingElement {
        path: "Envelope".into(),
        element: "Body".into(),
    })?;
    Ok(Envelope { header, body })
}

/// The error for an element other than the one expected.
pub fn unexpected(expected: &'static str, found: &Element<'_>) -> DecodeError {
    DecodeError::Unexpected {
        expected,
        found: format!("{:?}:{}", found.ns(), found.name_lossy()),
    }
}

fn read_header<'i>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
    header: &mut Header,
) -> Result<(), DecodeError> {
    use crate::xml::read_attr_value;
    while let Some(child) = r.next_child(&e)? {
        if child.ns() != Ns::Types {
            r.skip(child)?;
            continue;
        }
        match child.local_name() {
            "ServerVersionInfo" => {
                header.server_version = Some(ServerVersionInfo::read(r, child)?);
            }
            "RequestServerVersion" => {
                header.request_server_version = read_attr_value(&child, "Version")?;
                r.skip(child)?;
            }
            "ExchangeImpersonation" => {
                while let Some(sid) = r.next_child(&child)? {
                    if !sid.is(Ns::Types, "ConnectingSID") {
                        r.skip(sid)?;
                        continue;
                    }
                    while let Some(who) = r.next_child(&sid)? {
                        let make: Option<fn(String) -> Impersonation> = match who.local_name() {
                            "PrimarySmtpAddress" => Some(Impersonation::PrimarySmtpAddress),
                            "SmtpAddress" => Some(Impersonation::SmtpAddress),
                            "PrincipalName" => Some(Impersonation::PrincipalName),
                            "SID" => Some(Impersonation::Sid),
                            _ => None,
                        };
                        match make {
                            Some(make) => {
                                header.impersonation = Some(make(r.text(who)?.trim().to_string()))
                            }
                            None => r.skip(who)?,
                        }
                    }
                }
            }
            "TimeZoneContext" => {
                while let Some(def) = r.next_child(&child)? {
                    if def.is(Ns::Types, "TimeZoneDefinition")
                        && let Some(id) = def.attr("Id")?
                    {
                        header.time_zone = Some(TimeZoneContext { id });
                    }
                    r.skip(def)?;
                }
            }
            _ => r.skip(child)?,
        }
    }
    Ok(())
}

fn open_envelope(w: &mut XmlWriter) {
    w.declaration();
    w.tag("soap:Envelope")
        .attr("xmlns:soap", NS_SOAP)
        .attr("xmlns:t", NS_TYPES)
        .attr("xmlns:m", NS_MESSAGES)
        .open();
}

/// Writes a request envelope around `body`, written as the element `body_name`.
pub fn write_request<B: XmlElement>(header: &RequestHeader, body_name: &str, body: &B) -> Vec<u8> {
    let mut w = XmlWriter::default();
    write_request_into(&mut w, header, body_name, body);
    w.into_bytes()
}

/// Like [`write_request`], into an existing writer.
pub fn write_request_into<B: XmlElement>(
    w: &mut XmlWriter,
    header: &RequestHeader,
    body_name: &str,
    body: &B,
) {
    open_envelope(w);
    w.tag("soap:Header").children(|w| {
        w.tag("t:RequestServerVersion")
            .attr("Version", header.version.as_str())
            .empty();
        if let Some(who) = &header.impersonation {
            w.tag("t:ExchangeImpersonation").children(|w| {
                w.tag("t:ConnectingSID")
                    .children(|w| w.text_element(who.element(), who.value()));
            });
        }
        if let Some(tz) = &header.time_zone {
            w.tag("t:TimeZoneContext").children(|w| {
                w.tag("t:TimeZoneDefinition").attr("Id", &tz.id).empty();
            });
        }
    });
    w.tag("soap:Body").children(|w| body.write(w, body_name));
    w.end("soap:Envelope");
}

/// Writes a response envelope (as a server does) around `body`.
pub fn write_response<B: XmlElement>(
    server: Option<&ServerVersionInfo>,
    body_name: &str,
    body: &B,
) -> Vec<u8> {
    let mut w = XmlWriter::default();
    open_envelope(&mut w);
    write_server_header(&mut w, server);
    w.tag("soap:Body").children(|w| body.write(w, body_name));
    w.end("soap:Envelope");
    w.into_bytes()
}

/// Writes a fault envelope.
pub fn write_fault(server: Option<&ServerVersionInfo>, fault: &Fault) -> Vec<u8> {
    let mut w = XmlWriter::default();
    open_envelope(&mut w);
    write_server_header(&mut w, server);
    w.tag("soap:Body").children(|w| fault.write(w));
    w.end("soap:Envelope");
    w.into_bytes()
}

fn write_server_header(w: &mut XmlWriter, server: Option<&ServerVersionInfo>) {
    if let Some(server) = server {
        w.tag("soap:Header")
            .children(|w| server.write(w, "t:ServerVersionInfo"));
    }
}
