//! The XML machinery under every EWS wire type: namespaces, a pull reader, a writer, and the two
//! traits ([`XmlText`] for simple values, [`XmlElement`] for elements) that the `xml_struct!` and
//! `xml_enum!` macros implement for the wire types.
//!
//! Why not serde or yaserde for the wire types: both match element names without checking the
//! namespace they resolve to, so a prefix the server picks changes what parses; yaserde's
//! derives fail on any element they do not know (every real Exchange response has some); and a
//! streaming reader that borrows from the input is what reaches the parse speed the connector
//! needs. serde stays in use for JSON (`ews decode`, the admin APIs): the wire types derive
//! `Serialize`.

mod error;
pub mod reader;
pub mod writer;

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};

pub use reader::{Content, Element, XmlReader};
pub use writer::XmlWriter;

pub use error::DecodeError;

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace (read, never written; Exchange speaks 1.1).
pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// EWS types namespace (`t:`).
pub const NS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
/// EWS messages namespace (`m:`).
pub const NS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
/// EWS errors namespace, used inside SOAP fault details (`e:`).
pub const NS_ERRORS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

/// The namespaces an EWS element can resolve to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    /// SOAP envelope (1.1 or 1.2).
    Soap,
    /// `http://schemas.microsoft.com/exchange/services/2006/types`
    Types,
    /// `http://schemas.microsoft.com/exchange/services/2006/messages`
    Messages,
    /// `http://schemas.microsoft.com/exchange/services/2006/errors`
    Errors,
    /// Any other namespace.
    Other,
    /// No namespace (unqualified, e.g. `faultcode`).
    None,
    /// A prefix with no declaration in scope.
    Unknown,
}

impl Ns {
    /// Classifies a namespace URI.
    pub fn from_uri(uri: &[u8]) -> Ns {
        match uri {
            u if u == NS_TYPES.as_bytes() => Ns::Types,
            u if u == NS_MESSAGES.as_bytes() => Ns::Messages,
            u if u == NS_SOAP.as_bytes() || u == NS_SOAP12.as_bytes() => Ns::Soap,
            u if u == NS_ERRORS.as_bytes() => Ns::Errors,
            _ => Ns::Other,
        }
    }
}

/// A value written as element text or as an attribute value.
pub trait XmlText: Sized {
    /// Parses the text; the error says what was expected.
    fn from_text(text: &str) -> Result<Self, &'static str>;
    /// The text form.
    fn to_text(&self) -> Cow<'_, str>;
}

/// A type that reads from and writes to one XML element.
pub trait XmlElement: Sized {
    /// Reads the element `e` (whose start tag was just read) up to and including its end tag.
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError>;
    /// Writes the element under the qualified `name` (e.g. `"t:Subject"`).
    fn write(&self, w: &mut XmlWriter, name: &str);
}

/// Callback that gets the children a type does not know, and hands back those it does not want.
pub type Extra<'a, 'i> =
    dyn FnMut(&mut XmlReader<'i>, Element<'i>) -> Result<Option<Element<'i>>, DecodeError> + 'a;

/// A complex type whose content (attributes and children) can be shared with an extending type,
/// as `ResponseMessageType` is extended by each operation's response message.
pub trait XmlContent: Sized {
    /// Reads the element, offering children this type does not know to `extra`.
    fn read_content<'i>(
        r: &mut XmlReader<'i>,
        e: Element<'i>,
        extra: &mut Extra<'_, 'i>,
    ) -> Result<Self, DecodeError>;
    /// Adds this type's attributes to a start tag.
    fn write_attrs<'a>(&'a self, tag: writer::Tag<'a>) -> writer::Tag<'a>;
    /// Whether any child element would be written.
    fn has_children(&self) -> bool;
    /// Writes the child elements in schema order.
    fn write_children(&self, w: &mut XmlWriter);
}

/// Reads a simple-typed element's text and parses it.
pub fn read_text_value<'i, T: XmlText>(
    r: &mut XmlReader<'i>,
    e: Element<'i>,
) -> Result<T, DecodeError> {
    // A borrowed start tag: the name is only made into a string for an error.
    let element = e.clone();
    let text = r.text(e)?;
    T::from_text(text.trim()).map_err(|expected| DecodeError::InvalidValue {
        path: element.name_lossy(),
        value: truncate_for_message(&text),
        expected,
    })
}

/// Parses an attribute value read from `e`.
pub fn parse_attr<T: XmlText>(e: &Element<'_>, name: &str, text: &str) -> Result<T, DecodeError> {
    T::from_text(text.trim()).map_err(|expected| DecodeError::InvalidValue {
        path: format!("{}/@{name}", e.name_lossy()),
        value: truncate_for_message(text),
        expected,
    })
}

/// Reads an attribute and parses it.
pub fn read_attr_value<T: XmlText>(e: &Element<'_>, name: &str) -> Result<Option<T>, DecodeError> {
    // Parsed from the borrowed value: no string is made for a value that is not one.
    let mut found = None;
    e.for_each_attr(|key, value| {
        if found.is_none() && key == name {
            found = Some(parse_attr(e, name, &value)?);
        }
        Ok(())
    })?;
    Ok(found)
}

fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

impl XmlElement for String {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        Ok(r.text(e)?.into_owned())
    }
    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.text_element(name, self);
    }
}

macro_rules! text_elements {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::xml::XmlElement for $ty {
            fn read<'i>(
                r: &mut $crate::xml::XmlReader<'i>,
                e: $crate::xml::Element<'i>,
            ) -> Result<Self, $crate::xml::DecodeError> {
                $crate::xml::read_text_value(r, e)
            }
            fn write(&self, w: &mut $crate::xml::XmlWriter, name: &str) {
                w.text_element(name, &$crate::xml::XmlText::to_text(self));
            }
        }
    )*};
}
pub(crate) use text_elements;

text_elements!(bool, i32, i64, u32, f64, DateTime<Utc>);

impl XmlText for String {
    fn from_text(text: &str) -> Result<Self, &'static str> {
        Ok(text.to_string())
    }
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl XmlText for bool {
    fn from_text(text: &str) -> Result<Self, &'static str> {
        match text {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("a boolean (true, false, 1 or 0)"),
        }
    }
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(if *self { "true" } else { "false" })
    }
}

macro_rules! number_text {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl XmlText for $ty {
            fn from_text(text: &str) -> Result<Self, &'static str> {
                text.parse().map_err(|_| $what)
            }
            fn to_text(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
number_text!(i32 => "a 32-bit integer", i64 => "a 64-bit integer", u32 => "an unsigned integer");

impl XmlText for f64 {
    fn from_text(text: &str) -> Result<Self, &'static str> {
        match text {
            "INF" => Ok(f64::INFINITY),
            "-INF" => Ok(f64::NEG_INFINITY),
            _ => text.parse().map_err(|_| "a number"),
        }
    }
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}

/// `xs:dateTime`. Written in UTC with a `Z`; read with `Z`, with an offset, or without a zone.
///
/// A zone-less value is taken as UTC: EWS only sends those when the request had no
/// `TimeZoneContext` and the server then means UTC.
impl XmlText for DateTime<Utc> {
    fn from_text(text: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "an xs:dateTime such as 2026-03-02T08:00:00Z";
        if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
            return Ok(dt.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| naive.and_utc())
            .map_err(|_| EXPECTED)
    }
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

/// Writes an element whose content is an [`XmlContent`].
pub fn write_content<T: XmlContent>(value: &T, w: &mut XmlWriter, name: &str) {
    let tag = value.write_attrs(w.tag(name));
    if value.has_children() {
        tag.children(|w| value.write_children(w));
    } else {
        tag.empty();
    }
}

/// Fields that are absent on the wire are skipped in JSON too.
///
/// Required fields are never absent; the macros implement this trait with the default for every
/// type they declare.
pub trait Absent {
    /// Whether the value stands for "not present".
    fn is_absent(&self) -> bool {
        false
    }
}

impl Absent for String {}
impl Absent for bool {}
impl Absent for i32 {}
impl Absent for i64 {}
impl Absent for u32 {}
impl Absent for f64 {}
impl Absent for DateTime<Utc> {}

impl<T> Absent for Option<T> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

impl<T> Absent for Vec<T> {
    fn is_absent(&self) -> bool {
        self.is_empty()
    }
}

/// Serde helper for `skip_serializing_if`.
pub fn is_absent<T: Absent>(value: &T) -> bool {
    value.is_absent()
}

/// How the `xml_struct!` macro holds, reads and writes each kind of field.
#[doc(hidden)]
pub mod field {
    use super::*;

    /// Required element or attribute: must be present when read.
    pub type Req<T> = T;

    pub fn missing(parent: &str, child: &str) -> DecodeError {
        DecodeError::MissingElement {
            path: parent.to_string(),
            element: child.to_string(),
        }
    }

    pub fn write_opt<T: XmlElement>(value: &Option<T>, w: &mut XmlWriter, name: &str) {
        if let Some(v) = value {
            v.write(w, name);
        }
    }

    pub fn write_many<T: XmlElement>(values: &[T], w: &mut XmlWriter, name: &str) {
        for v in values {
            v.write(w, name);
        }
    }
}

/// Declares a wire struct whose fields are elements (in schema order) and attributes, and
/// implements [`XmlElement`] for it.
///
/// Field kinds: `opt T` (optional element, `Option<T>`), `many T` (repeated element,
/// `Vec<T>`), `req T` (required element). Attributes go in a leading `attrs { .. }` block with
/// kinds `opt` and `req`. `t`/`m` name the namespace of each element. Unknown children are
/// skipped; a missing required element or attribute is an error naming it.
macro_rules! xml_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(@attrs {
                $( $(#[$ameta:meta])* $avis:vis $afield:ident : $akind:ident $aty:ty = $aname:literal ),* $(,)?
            })?
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $kind:ident $fty:ty = $prefix:ident $ename:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        $vis struct $name {
            $($(
                $(#[$ameta])*
                #[serde(skip_serializing_if = "crate::xml::is_absent")]
                $avis $afield: $crate::xml::xml_struct!(@ty $akind $aty),
            )*)?
            $(
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "crate::xml::is_absent")]
                $fvis $field: $crate::xml::xml_struct!(@ty $kind $fty),
            )*
        }

        impl $crate::xml::Absent for $name {}

        impl $crate::xml::XmlContent for $name {
            #[allow(unused_mut, unused_variables)]
            fn read_content<'i>(
                r: &mut $crate::xml::XmlReader<'i>,
                e: $crate::xml::Element<'i>,
                extra: &mut $crate::xml::Extra<'_, 'i>,
            ) -> Result<Self, $crate::xml::DecodeError> {
                $($( let mut $afield: Option<$aty> = None; )*)?
                $(
                    // One pass over the attributes, whatever their number.
                    e.for_each_attr(|key, value| {
                        match key {
                            $( $aname => $afield = Some($crate::xml::parse_attr(&e, $aname, &value)?), )*
                            _ => {}
                        }
                        Ok(())
                    })?;
                )?
                $( let mut $field: $crate::xml::xml_struct!(@builder $kind $fty) = Default::default(); )*
                // The fields by position, so that dispatch is one `match` on the local name and
                // the strict order check compares positions.
                #[allow(non_camel_case_types, dead_code)]
                #[derive(Clone, Copy)]
                enum Field { $($field,)* Unknown__ }
                // Position of the last known field read, for the strict order check.
                let mut last = 0usize;
                while let Some(child) = r.next_child(&e)? {
                    let which = match child.local_name() {
                        $( $ename if child.ns() == $crate::xml::xml_struct!(@ns $prefix) => Field::$field, )*
                        _ => Field::Unknown__,
                    };
                    match which {
                        $(
                            Field::$field => {
                                let index = Field::$field as usize;
                                if index < last && r.is_strict() {
                                    return Err(r.out_of_order(&e, &child));
                                }
                                last = index;
                                let value = <$fty as $crate::xml::XmlElement>::read(r, child)
                                    .map_err(|err| err.within(&e.name_lossy()))?;
                                $crate::xml::xml_struct!(@set $kind $field value);
                            }
                        )*
                        Field::Unknown__ => {
                            if let Some(child) = extra(r, child)? {
                                r.skip(child)?;
                            }
                        }
                    }
                }
                Ok(Self {
                    $($(
                        $afield: $crate::xml::xml_struct!(@finish_attr $akind $afield e.name_lossy(), $aname),
                    )*)?
                    $(
                        $field: $crate::xml::xml_struct!(@finish $kind $field e.name_lossy(), $ename),
                    )*
                })
            }

            #[allow(unused_mut)]
            fn write_attrs<'a>(
                &'a self,
                mut tag: $crate::xml::writer::Tag<'a>,
            ) -> $crate::xml::writer::Tag<'a> {
                $($(
                    tag = $crate::xml::xml_struct!(@write_attr $akind tag, self.$afield, $aname);
                )*)?
                tag
            }

            fn has_children(&self) -> bool {
                false $( || $crate::xml::xml_struct!(@present $kind self.$field) )*
            }

            #[allow(unused_variables)]
            fn write_children(&self, w: &mut $crate::xml::XmlWriter) {
                $(
                    $crate::xml::xml_struct!(
                        @write $kind w, self.$field,
                        concat!(stringify!($prefix), ":", $ename)
                    );
                )*
            }
        }

        impl $crate::xml::XmlElement for $name {
            fn read<'i>(
                r: &mut $crate::xml::XmlReader<'i>,
                e: $crate::xml::Element<'i>,
            ) -> Result<Self, $crate::xml::DecodeError> {
                <Self as $crate::xml::XmlContent>::read_content(r, e, &mut |_, child| Ok(Some(child)))
            }

            fn write(&self, w: &mut $crate::xml::XmlWriter, name: &str) {
                $crate::xml::write_content(self, w, name)
            }
        }
    };

    (@ty opt $t:ty) => { Option<$t> };
    (@ty many $t:ty) => { Vec<$t> };
    (@ty req $t:ty) => { $t };
    (@builder opt $t:ty) => { Option<$t> };
    (@builder many $t:ty) => { Vec<$t> };
    (@builder req $t:ty) => { Option<$t> };
    (@ns t) => { $crate::xml::Ns::Types };
    (@ns m) => { $crate::xml::Ns::Messages };
    (@set opt $f:ident $v:ident) => { $f = Some($v) };
    (@set req $f:ident $v:ident) => { $f = Some($v) };
    (@set many $f:ident $v:ident) => { $f.push($v) };
    (@finish opt $f:ident $parent:expr, $name:literal) => { $f };
    (@finish many $f:ident $parent:expr, $name:literal) => { $f };
    (@finish req $f:ident $parent:expr, $name:literal) => {
        $f.ok_or_else(|| $crate::xml::field::missing(&$parent, $name))?
    };
    (@finish_attr opt $f:ident $parent:expr, $name:literal) => { $f };
    (@finish_attr req $f:ident $parent:expr, $name:literal) => {
        $f.ok_or_else(|| $crate::xml::DecodeError::MissingAttribute {
            element: $parent,
            attribute: $name,
        })?
    };
    (@write_attr opt $tag:ident, $v:expr, $name:literal) => {
        match &$v {
            Some(v) => $tag.attr($name, &$crate::xml::XmlText::to_text(v)),
            None => $tag,
        }
    };
    (@write_attr req $tag:ident, $v:expr, $name:literal) => {
        $tag.attr($name, &$crate::xml::XmlText::to_text(&$v))
    };
    (@present opt $v:expr) => { $v.is_some() };
    (@present many $v:expr) => { !$v.is_empty() };
    (@present req $v:expr) => { true };
    (@write opt $w:ident, $v:expr, $name:expr) => { $crate::xml::field::write_opt(&$v, $w, $name) };
    (@write many $w:ident, $v:expr, $name:expr) => { $crate::xml::field::write_many(&$v, $w, $name) };
    (@write req $w:ident, $v:expr, $name:expr) => { $crate::xml::XmlElement::write(&$v, $w, $name) };
}
pub(crate) use xml_struct;

/// Declares an enum of server strings with an `Other(String)` arm for values we do not know,
/// and implements [`XmlText`], [`XmlElement`], `Display` and `Serialize` (as the string).
macro_rules! xml_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of taskbridge does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire text of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(s) => s,
                }
            }
        }

        impl $crate::xml::XmlText for $name {
            fn from_text(text: &str) -> Result<Self, &'static str> {
                Ok(match text {
                    $( $text => $name::$variant, )*
                    other => $name::Other(other.to_string()),
                })
            }
            fn to_text(&self) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(<$name as $crate::xml::XmlText>::from_text(s).unwrap_or_else(|_| $name::Other(s.to_string())))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        $crate::xml::text_elements!($name);

        impl $crate::xml::Absent for $name {}
    };
}
pub(crate) use xml_enum;
