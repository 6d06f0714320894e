//! A pull reader over quick-xml's `NsReader` that hands out elements by namespace and local name.
//!
//! Everything that parses EWS goes through [`XmlReader`]: it resolves prefixes (so `s:`, `soap:`,
//! `SOAP-ENV:` and default namespaces all read the same), skips comments, processing instructions
//! and whitespace, refuses any DOCTYPE (so no entity expansion can happen), refuses characters
//! XML 1.0 does not allow (C0 controls other than tab, line feed and carriage return, raw or as
//! character references), and turns every quick-xml failure into a [`DecodeError`] with a line
//! and column.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::Ns;
use crate::xml::DecodeError;

/// Upper bound on namespace declarations in scope; real EWS messages use fewer than ten.
const MAX_NAMESPACE_BINDINGS: usize = 256;

/// One start tag, with the namespace it resolved to.
///
/// Cloning one read from an in-memory message copies no text: the tag borrows the input.
#[derive(Clone, Debug)]
pub struct Element<'i> {
    ns: Ns,
    start: BytesStart<'i>,
    /// Where the local part of the name starts (after `prefix:`), found once.
    local_at: usize,
    empty: bool,
}

impl<'i> Element<'i> {
    fn new((ns, local_at): (Ns, usize), start: BytesStart<'i>, empty: bool) -> Self {
        Element {
            ns,
            start,
            local_at,
            empty,
        }
    }

    /// The namespace of the element name.
    pub fn ns(&self) -> Ns {
        self.ns
    }

    /// The local part of the element name.
    pub fn local_name(&self) -> &str {
        &self.start.name().0[self.local_at..]
    }

    /// The local name, owned, for messages.
    pub fn name_lossy(&self) -> String {
        self.local_name().to_string()
    }

    /// Whether this element is `local` in namespace `ns`.
    pub fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.local_name() == local
    }

    /// Whether the element was written as `<x/>`.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Calls `each` with the name and unescaped value of every unqualified attribute.
    ///
    /// EWS attributes (`Id`, `ChangeKey`, `ResponseClass`, ...) are unqualified, so prefixed
    /// attributes and `xmlns` declarations are left out.
    pub fn for_each_attr(
        &self,
        mut each: impl FnMut(&str, Cow<'_, str>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        // Duplicate checks allocate; a duplicated attribute is simply seen twice.
        for attr in self.start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| self.bad_attribute(e))?;
            let key = attr.key.0;
            if key.contains(':') || key == "xmlns" {
                continue;
            }
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| self.bad_attribute(e))?;
            // Raw control characters were refused up front; a character reference can still
            // bring one (only a value that changed in normalisation can hold one).
            if let Cow::Owned(v) = &value
                && let Some(c) = v.chars().find(|&c| !is_xml_char(c))
            {
                return Err(self.bad_attribute(format_args!(
                    "character U+{:04X} is not allowed in XML",
                    u32::from(c)
                )));
            }
            each(key, value)?;
        }
        Ok(())
    }

    /// The unescaped value of the unqualified attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Result<Option<String>, DecodeError> {
        let mut found = None;
        self.for_each_attr(|key, value| {
            if found.is_none() && key == name {
                found = Some(value.into_owned());
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn bad_attribute(&self, err: impl std::fmt::Display) -> DecodeError {
        DecodeError::InvalidValue {
            path: self.name_lossy(),
            value: err.to_string(),
            expected: "well-formed attributes",
        }
    }

    /// Like [`Element::attr`] but the attribute must be present.
    pub fn required_attr(&self, name: &'static str) -> Result<String, DecodeError> {
        self.attr(name)?
            .ok_or_else(|| DecodeError::MissingAttribute {
                element: self.name_lossy(),
                attribute: name,
            })
    }
}

/// A namespace declaration in scope.
struct Binding {
    /// The prefix (`""` for the default namespace).
    prefix: Box<str>,
    ns: Ns,
    /// Depth of the element that declared it.
    depth: u32,
}

/// A piece of an element's content (see [`XmlReader::next_content`]).
#[derive(Debug)]
pub enum Content<'i> {
    /// A child element.
    Element(Element<'i>),
    /// Text, unescaped.
    Text(Cow<'i, str>),
}

/// A streaming reader over an in-memory EWS message.
///
/// Namespaces are resolved here rather than by quick-xml's `NsReader`: EWS declares them on a
/// handful of elements, so a start tag is only searched for declarations when its attribute text
/// contains `xmlns`, and a lookup scans a few bindings. This halves the cost of resolution,
/// which dominated parsing.
pub struct XmlReader<'i> {
    inner: Reader<&'i [u8]>,
    input: &'i [u8],
    strict: bool,
    bindings: Vec<Binding>,
    depth: u32,
    /// The last element read was empty: its declarations go out of scope on the next read.
    pop_after_empty: bool,
    /// Offset of the first byte that is a control character XML does not allow; reading
    /// stops with an error there (checked once, up front: quick-xml passes them through).
    forbidden_at: Option<usize>,
}

/// Whether `c` is a `Char` of XML 1.0 (5th edition).
/// See <https://www.w3.org/TR/xml/#charsets>.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// The offset of the first C0 control character other than tab, line feed and carriage return.
///
/// Eight bytes at a time: a word with no byte below 0x20 (the common case, even for
/// indented XML, whose line breaks fall in a few words only) costs a handful of operations.
fn first_forbidden_control(input: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let forbidden = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    let mut words = input.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // A byte below 0x20 sets its high bit here (the classic "has less than" test).
        if x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0
            && let Some(i) = word.iter().position(|&b| forbidden(b))
        {
            return Some(at + i);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| forbidden(b))
        .map(|i| at + i)
}

impl<'i> XmlReader<'i> {
    /// Starts reading `input`, which must be the whole message.
    pub fn new(input: &'i [u8]) -> Self {
        let mut inner = Reader::from_reader(input);
        let config = inner.config_mut();
        config.trim_text(false);
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Self {
            inner,
            input,
            strict: false,
            bindings: Vec::new(),
            depth: 0,
            pop_after_empty: false,
            forbidden_at: first_forbidden_control(input),
        }
    }

    /// In strict mode, known child elements must come in schema order (as Exchange's own
    /// validator demands); the simulator reads requests this way. Unknown elements are still
    /// skipped: the schema allows many that taskbridge does not model.
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The error for a known element that comes after one the schema puts later.
    pub fn out_of_order(&self, parent: &Element<'_>, child: &Element<'_>) -> DecodeError {
        let (line, column) = self.line_col(self.inner.buffer_position());
        DecodeError::OutOfOrder {
            parent: parent.name_lossy(),
            element: child.name_lossy(),
            line,
            column,
        }
    }

    /// Line and column (both from 1) of a byte offset in the input.
    pub fn line_col(&self, offset: u64) -> (usize, usize) {
        line_col(self.input, offset)
    }

    fn error(&self, err: impl std::fmt::Display) -> DecodeError {
        let offset = self
            .inner
            .error_position()
            .max(self.inner.buffer_position());
        let (line, column) = self.line_col(offset);
        DecodeError::Malformed {
            line,
            column,
            message: err.to_string(),
        }
    }

    /// Reads the next event; for a start tag, also its namespace and where its local name
    /// starts.
    fn read(&mut self) -> Result<((Ns, usize), Event<'i>), DecodeError> {
        if let Some(at) = self.forbidden_at {
            let (line, column) = self.line_col(at as u64);
            return Err(DecodeError::Malformed {
                line,
                column,
                message: format!("character U+{:04X} is not allowed in XML", self.input[at]),
            });
        }
        if self.pop_after_empty {
            self.pop_after_empty = false;
            self.pop_bindings(self.depth + 1);
        }
        let event = match self.inner.read_event() {
            Ok(ev) => ev,
            Err(e) => return Err(self.error(e)),
        };
        let ns = match &event {
            Event::Start(start) => {
                self.depth += 1;
                self.declare(start, self.depth)?;
                self.resolve(start)
            }
            Event::Empty(start) => {
                self.declare(start, self.depth + 1)?;
                self.pop_after_empty = true;
                self.resolve(start)
            }
            Event::End(_) => {
                self.pop_bindings(self.depth);
                self.depth = self.depth.saturating_sub(1);
                (Ns::None, 0)
            }
            Event::DocType(_) => return Err(DecodeError::DocTypeRefused),
            _ => (Ns::None, 0),
        };
        Ok((ns, event))
    }

    /// Records the `xmlns` declarations of a start tag.
    fn declare(&mut self, start: &BytesStart<'_>, depth: u32) -> Result<(), DecodeError> {
        if !mentions_xmlns(start.attributes_raw().as_bytes()) {
            return Ok(());
        }
        for attr in start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| self.error(e))?;
            let key = attr.key.0;
            let prefix = if key == "xmlns" {
                ""
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                p
            } else {
                continue;
            };
            if self.bindings.len() >= MAX_NAMESPACE_BINDINGS {
                return Err(self.error("too many namespace declarations in scope"));
            }
            let uri = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| self.error(e))?;
            // `xmlns=""` undeclares the default namespace.
            let ns = if uri.is_empty() {
                Ns::None
            } else {
                Ns::from_uri(uri.as_bytes())
            };
            self.bindings.push(Binding {
                prefix: prefix.into(),
                ns,
                depth,
            });
        }
        Ok(())
    }

    fn pop_bindings(&mut self, depth: u32) {
        while self.bindings.last().is_some_and(|b| b.depth >= depth) {
            self.bindings.pop();
        }
    }

    /// The namespace of a start tag and where its local name starts.
    fn resolve(&self, start: &BytesStart<'_>) -> (Ns, usize) {
        let name = start.name().0;
        let colon = name.as_bytes().iter().position(|&b| b == b':');
        let prefix = colon.map_or("", |i| &name[..i]);
        let local_at = colon.map_or(0, |i| i + 1);
        let ns = match self.bindings.iter().rev().find(|b| &*b.prefix == prefix) {
            Some(b) => b.ns,
            None if prefix.is_empty() => Ns::None,
            None => Ns::Unknown,
        };
        (ns, local_at)
    }

    /// Reads up to the document element and returns it.
    pub fn root(&mut self) -> Result<Element<'i>, DecodeError> {
        loop {
            match self.read()? {
                (ns, Event::Start(start)) => {
                    return Ok(Element::new(ns, start, false));
                }
                (ns, Event::Empty(start)) => {
                    return Ok(Element::new(ns, start, true));
                }
                (_, Event::Text(t)) if t.trim().is_empty() => {}
                (_, Event::Decl(_) | Event::Comment(_) | Event::PI(_)) => {}
                (_, Event::Eof) => return Err(DecodeError::Empty),
                (_, other) => {
                    return Err(self.error(format!(
                        "unexpected content before the document element: {other:?}"
                    )));
                }
            }
        }
    }

    /// Returns the next child element of `parent`, or `None` once `parent` is closed.
    ///
    /// Text between child elements is ignored: EWS element-only content never carries any, and
    /// a server that pretty-prints must not confuse us.
    pub fn next_child(&mut self, parent: &Element<'_>) -> Result<Option<Element<'i>>, DecodeError> {
        if parent.empty {
            return Ok(None);
        }
        loop {
            match self.read()? {
                (ns, Event::Start(start)) => {
                    return Ok(Some(Element::new(ns, start, false)));
                }
                (ns, Event::Empty(start)) => {
                    return Ok(Some(Element::new(ns, start, true)));
                }
                (_, Event::End(_)) => return Ok(None),
                (_, Event::Eof) => return Err(self.truncated()),
                _ => {}
            }
        }
    }

    fn truncated(&self) -> DecodeError {
        let (line, column) = self.line_col(self.inner.buffer_position());
        DecodeError::Truncated { line, column }
    }

    /// Skips `element` and everything inside it.
    pub fn skip(&mut self, element: Element<'_>) -> Result<(), DecodeError> {
        if element.empty {
            return Ok(());
        }
        let mut depth = 0usize;
        loop {
            match self.read()? {
                (_, Event::Start(_)) => depth += 1,
                (_, Event::End(_)) if depth == 0 => return Ok(()),
                (_, Event::End(_)) => depth -= 1,
                (_, Event::Eof) => return Err(self.truncated()),
                _ => {}
            }
        }
    }

    /// Returns the next child element or piece of text of `parent`, or `None` once `parent` is
    /// closed: for reading content whose shape is not known in advance (`ews decode` of an
    /// operation taskbridge does not model). Text comes in pieces (an entity reference is a
    /// piece of its own); whitespace-only pieces are skipped.
    pub fn next_content(
        &mut self,
        parent: &Element<'_>,
    ) -> Result<Option<Content<'i>>, DecodeError> {
        if parent.empty {
            return Ok(None);
        }
        loop {
            match self.read()? {
                (ns, Event::Start(start)) => {
                    return Ok(Some(Content::Element(Element::new(ns, start, false))));
                }
                (ns, Event::Empty(start)) => {
                    return Ok(Some(Content::Element(Element::new(ns, start, true))));
                }
                (_, Event::Text(t)) => {
                    let text = t.xml10_content();
                    if !text.trim().is_empty() {
                        return Ok(Some(Content::Text(text)));
                    }
                }
                (_, Event::CData(c)) => {
                    let text = c.xml10_content();
                    return Ok(Some(Content::Text(text)));
                }
                (_, Event::GeneralRef(r)) => {
                    let ch = self.resolve_reference(&r)?;
                    return Ok(Some(Content::Text(Cow::Owned(ch.to_string()))));
                }
                (_, Event::End(_)) => return Ok(None),
                (_, Event::Eof) => return Err(self.truncated()),
                _ => {}
            }
        }
    }

    /// The character an entity or character reference stands for: only the five predefined
    /// entities and references to characters XML allows.
    fn resolve_reference(&self, r: &quick_xml::events::BytesRef<'_>) -> Result<char, DecodeError> {
        let ch = match r.resolve_char_ref() {
            Ok(Some(ch)) => ch,
            Ok(None) => match &**r {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "apos" => '\'',
                "quot" => '"',
                other => return Err(DecodeError::UnknownEntity(other.to_string())),
            },
            Err(e) => return Err(self.error(e)),
        };
        if !is_xml_char(ch) {
            return Err(self.error(format!(
                "character reference to U+{:04X}, which XML does not allow",
                u32::from(ch)
            )));
        }
        Ok(ch)
    }

    /// Reads the text content of `element`, unescaped, up to its end tag.
    ///
    /// Child elements inside (which a simple-typed EWS element never has) are skipped. Only the
    /// five predefined entities and character references are known; anything else is an error,
    /// since without a DTD no other entity can be declared.
    pub fn text(&mut self, element: Element<'_>) -> Result<Cow<'i, str>, DecodeError> {
        if element.empty {
            return Ok(Cow::Borrowed(""));
        }
        let mut out: Option<Cow<'i, str>> = None;
        let mut depth = 0usize;
        loop {
            match self.read()? {
                (_, Event::Text(t)) if depth == 0 => push_text(&mut out, t.xml10_content()),
                (_, Event::CData(c)) if depth == 0 => push_text(&mut out, c.xml10_content()),
                (_, Event::GeneralRef(r)) if depth == 0 => {
                    let ch = self.resolve_reference(&r)?;
                    let mut buf = [0u8; 4];
                    push_text(&mut out, Cow::Owned(ch.encode_utf8(&mut buf).to_string()));
                }
                (_, Event::Start(_)) => depth += 1,
                (_, Event::End(_)) if depth == 0 => return Ok(out.unwrap_or(Cow::Borrowed(""))),
                (_, Event::End(_)) => depth -= 1,
                (_, Event::Eof) => return Err(self.truncated()),
                _ => {}
            }
        }
    }

    /// Requires that nothing but whitespace, comments and processing instructions follow the
    /// document element.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        loop {
            match self.read()? {
                (_, Event::Eof) => return Ok(()),
                (_, Event::Text(t)) if t.trim().is_empty() => {}
                (_, Event::Comment(_) | Event::PI(_)) => {}
                (_, other) => {
                    return Err(self.error(format!(
                        "unexpected content after the document element: {other:?}"
                    )));
                }
            }
        }
    }
}

fn push_text<'i>(out: &mut Option<Cow<'i, str>>, piece: Cow<'i, str>) {
    match out {
        None => *out = Some(piece),
        Some(existing) => existing.to_mut().push_str(&piece),
    }
}

/// Whether a start tag's attribute text contains `xmlns`: most tags have no attributes and
/// the rest a few short ones, so a search for the `x` is cheaper than a substring searcher or
/// a comparison at every offset.
fn mentions_xmlns(attributes: &[u8]) -> bool {
    let mut rest = attributes;
    while let Some(at) = rest.iter().position(|&b| b == b'x') {
        if rest[at..].starts_with(b"xmlns") {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// Line and column (from 1) of `offset` in `input`.
pub fn line_col(input: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(input.len());
    let before = &input[..end];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => end - nl,
        None => end + 1,
    };
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of the root element of `xml`, or the error.
    fn root_text(xml: &[u8]) -> Result<String, DecodeError> {
        let mut r = XmlReader::new(xml);
        let root = r.root()?;
        Ok(r.text(root)?.into_owned())
    }

    fn root_attr(xml: &[u8]) -> Result<Option<String>, DecodeError> {
        let mut r = XmlReader::new(xml);
        r.root()?.attr("a")
    }

    // Found by the chaos suite: a notification whose subscription id held a NUL was decoded
    // and answered as well-formed (tests/chaos/listener.rs).
    #[test]
    fn reader_control_characters_are_refused_raw_or_referenced() {
        for bad in [
            &b"<r>a\x00b</r>"[..],
            b"<r>\x1b[31m</r>",
            b"<r><![CDATA[\x02]]></r>",
            b"<r>&#1;</r>",
            b"<r>&#x1F;</r>",
            b"<r>&#xFFFE;</r>",
        ] {
            let err = root_text(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
        }
        assert!(root_attr(b"<r a=\"x\x01\"/>").is_err());
        assert!(root_attr(b"<r a=\"x&#1;\"/>").is_err());
        // The control characters XML allows, and everything else, still read.
        assert_eq!(
            root_text("<r>\ta\r\nb &#9;&#xA;&#x10000; \u{FFFD}</r>".as_bytes()).unwrap(),
            // Line ends are normalised, as XML says.
            "\ta\nb \t\n\u{10000} \u{FFFD}"
        );
        assert_eq!(
            root_attr(b"<r a=\"x&#32;y\"/>").unwrap().as_deref(),
            Some("x y")
        );
    }

    #[test]
    fn reader_xmlns_is_found_anywhere_in_the_attributes() {
        for (text, expected) in [
            ("", false),
            (" Id=\"x\"", false),
            (" xmlns=\"urn:a\"", true),
            (" a=\"xx\" xmlns:t=\"urn:t\"", true),
            (" a=\"xmln\"", false),
            (" a=\"xxmlns\"", true),
            ("xmlns", true),
        ] {
            assert_eq!(mentions_xmlns(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn reader_forbidden_control_is_found_at_every_offset() {
        // Lengths around the eight-byte words and their remainders.
        for len in 0..100 {
            for at in 0..len {
                let mut input = vec![b'a'; len];
                input[at] = 0x07;
                assert_eq!(first_forbidden_control(&input), Some(at), "{len} {at}");
                input[at] = b'\n';
                assert_eq!(first_forbidden_control(&input), None);
                // An allowed control character flags a word too; the search goes on past it.
                input[0] = b'\t';
                input[at] = 0x1b;
                assert_eq!(first_forbidden_control(&input), Some(at), "{len} {at}");
            }
        }
        // Bytes of multi-byte UTF-8 sequences are all >= 0x80.
        assert_eq!(first_forbidden_control("żółw \u{1F600}\t".as_bytes()), None);
    }
}
