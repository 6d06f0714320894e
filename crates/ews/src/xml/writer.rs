//! Writes EWS messages with quick-xml's `Writer`, always with the same prefixes.
//!
//! Requests use `soap:`, `t:` and `m:` declared once on the envelope, so writers only ever name
//! elements as `"t:Subject"`; element order is the caller's job and follows the schema.

use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

/// Writing into a `Vec<u8>` cannot fail; this is the one place that says so.
fn infallible(result: std::io::Result<()>) {
    result.expect("writing XML into a Vec<u8> cannot fail");
}

/// An XML writer over a growable buffer.
pub struct XmlWriter {
    inner: Writer<Vec<u8>>,
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl XmlWriter {
    /// A writer whose buffer starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Writer::new(Vec::with_capacity(capacity)),
        }
    }

    /// Writes the `<?xml ...?>` declaration.
    pub fn declaration(&mut self) {
        self.raw(br#"<?xml version="1.0" encoding="utf-8"?>"#);
    }

    /// Appends bytes that are already well-formed XML.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.inner.get_mut().extend_from_slice(bytes);
    }

    /// Starts the element `name` (with its prefix, e.g. `"t:Task"`).
    pub fn tag<'a>(&'a mut self, name: &'a str) -> Tag<'a> {
        Tag {
            writer: self,
            name,
            start: BytesStart::new(name),
        }
    }

    /// Writes `<name>text</name>`, escaping the text.
    pub fn text_element(&mut self, name: &str, text: &str) {
        self.tag(name).text(text);
    }

    /// Closes the element `name`.
    pub fn end(&mut self, name: &str) {
        infallible(self.inner.write_event(Event::End(BytesEnd::new(name))));
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.inner.get_ref()
    }

    /// The finished document.
    pub fn into_bytes(self) -> Vec<u8> {
        self.inner.into_inner()
    }
}

/// A start tag being built; attributes first, then one of the finishing calls.
pub struct Tag<'a> {
    writer: &'a mut XmlWriter,
    name: &'a str,
    start: BytesStart<'a>,
}

impl<'a> Tag<'a> {
    /// Adds an attribute (its value is escaped).
    pub fn attr(mut self, name: &str, value: &str) -> Self {
        self.start.push_attribute((name, value));
        self
    }

    /// Adds an attribute when a value is present.
    pub fn attr_opt(self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Writes `<name .../>`.
    pub fn empty(self) {
        infallible(self.writer.inner.write_event(Event::Empty(self.start)));
    }

    /// Writes the start tag only; the caller writes the content and calls [`XmlWriter::end`].
    pub fn open(self) -> &'a mut XmlWriter {
        infallible(self.writer.inner.write_event(Event::Start(self.start)));
        self.writer
    }

    /// Writes `<name ...>text</name>`.
    pub fn text(self, text: &str) {
        let (name, writer) = (self.name, self.writer);
        infallible(writer.inner.write_event(Event::Start(self.start)));
        infallible(writer.inner.write_event(Event::Text(BytesText::new(text))));
        infallible(writer.inner.write_event(Event::End(BytesEnd::new(name))));
    }

    /// Writes the start tag, whatever `content` writes, and the end tag.
    pub fn children(self, content: impl FnOnce(&mut XmlWriter)) {
        let name = self.name;
        let writer = self.open();
        content(writer);
        writer.end(name);
    }
}
