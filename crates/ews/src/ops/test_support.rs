//! Helpers for the inline serialize / deserialize tests of the operation modules.

use crate::xml::{NS_MESSAGES, NS_TYPES, XmlElement, XmlReader, XmlWriter};

/// Writes `value` as `name` and checks the exact bytes (schema order matters).
#[track_caller]
pub fn assert_writes<T: XmlElement>(value: &T, name: &str, expected: &str) {
    let mut w = XmlWriter::default();
    value.write(&mut w, name);
    let got = String::from_utf8(w.into_bytes()).expect("utf-8");
    if got != expected {
        panic!("written XML differs\nexpected:\n{expected}\ngot:\n{got}\n");
    }
}

/// Reads a standalone element (with its own namespace declarations).
#[track_caller]
pub fn read_str<T: XmlElement>(xml: &str) -> T {
    let mut r = XmlReader::new(xml.as_bytes());
    let root = r.root().expect("root element");
    match T::read(&mut r, root) {
        Ok(v) => v,
        Err(e) => panic!("cannot read test XML: {e}"),
    }
}

/// Writes, reads back and writes again; both writes must be identical.
#[track_caller]
pub fn assert_round_trip<T: XmlElement>(value: &T, name: &str) {
    let first = write_wrapped(value, name);
    let mut r = XmlReader::new(first.as_bytes());
    let root = r.root().expect("root");
    let child = r.next_child(&root).expect("read").expect("child");
    let back = match T::read(&mut r, child) {
        Ok(v) => v,
        Err(e) => panic!("cannot read back what we wrote: {e}\n{first}"),
    };
    let second = write_wrapped(&back, name);
    assert_eq!(first, second, "round trip changed the XML");
}

fn write_wrapped<T: XmlElement>(value: &T, name: &str) -> String {
    let mut w = XmlWriter::default();
    w.raw(format!(r#"<wrap xmlns:t="{NS_TYPES}" xmlns:m="{NS_MESSAGES}">"#).as_bytes());
    value.write(&mut w, name);
    w.raw(b"</wrap>");
    String::from_utf8(w.into_bytes()).expect("utf-8")
}
