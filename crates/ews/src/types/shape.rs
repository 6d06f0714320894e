//! Property paths, response shapes, restrictions and paging: how a request says which items and
//! which of their properties it wants.

use super::item::ExtendedFieldUri;
use crate::xml::{DecodeError, Element, Ns, XmlElement, XmlReader, XmlWriter, xml_struct};

// Generated from wsdl/types.xsd (see `crate::types::generated`).
pub use crate::types::generated::{
    BasePoint, BaseShape, Constant, FolderShape, IndexedPageView, ItemShape,
};

/// Names of the unindexed field URIs taskbridge reads and writes (`t:UnindexedFieldURIType`).
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/fielduri>.
pub mod field_uri {
    /// `item:Subject`
    pub const SUBJECT: &str = "item:Subject";
    /// `item:Body`
    pub const BODY: &str = "item:Body";
    /// `item:Categories`
    pub const CATEGORIES: &str = "item:Categories";
    /// `item:Importance`
    pub const IMPORTANCE: &str = "item:Importance";
    /// `item:LastModifiedTime`
    pub const LAST_MODIFIED_TIME: &str = "item:LastModifiedTime";
    /// `item:DateTimeCreated`
    pub const DATE_TIME_CREATED: &str = "item:DateTimeCreated";
    /// `item:ItemClass`
    pub const ITEM_CLASS: &str = "item:ItemClass";
    /// `task:ActualWork`
    pub const ACTUAL_WORK: &str = "task:ActualWork";
    /// `task:ChangeCount`
    pub const CHANGE_COUNT: &str = "task:ChangeCount";
    /// `task:CompleteDate`
    pub const COMPLETE_DATE: &str = "task:CompleteDate";
    /// `task:DueDate`
    pub const DUE_DATE: &str = "task:DueDate";
    /// `task:IsComplete`
    pub const IS_COMPLETE: &str = "task:IsComplete";
    /// `task:Owner`
    pub const OWNER: &str = "task:Owner";
    /// `task:PercentComplete`
    pub const PERCENT_COMPLETE: &str = "task:PercentComplete";
    /// `task:StartDate`
    pub const START_DATE: &str = "task:StartDate";
    /// `task:Status`
    pub const STATUS: &str = "task:Status";
    /// `task:StatusDescription`
    pub const STATUS_DESCRIPTION: &str = "task:StatusDescription";
    /// `task:TotalWork`
    pub const TOTAL_WORK: &str = "task:TotalWork";
}

// Hand-written: `t:Path` is a substitution group (`FieldURI`, `ExtendedFieldURI`): the element
// name picks the variant, which is a Rust enum and which `xml_struct!` cannot express.
/// A property path (the `t:Path` substitution group): an unindexed field or an extended property.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/path>.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Path {
    /// `t:FieldURI`, e.g. `task:PercentComplete`.
    FieldUri(String),
    /// `t:ExtendedFieldURI`.
    ExtendedFieldUri(ExtendedFieldUri),
}

impl Path {
    /// The path of an unindexed field.
    pub fn field(uri: &str) -> Self {
        Path::FieldUri(uri.to_string())
    }

    /// Reads a path element, or hands the element back if it is not one.
    pub(crate) fn read_any<'i>(
        r: &mut XmlReader<'i>,
        e: Element<'i>,
    ) -> Result<Result<Path, Element<'i>>, DecodeError> {
        if e.is(Ns::Types, "FieldURI") {
            let uri = e.required_attr("FieldURI")?;
            r.skip(e)?;
            Ok(Ok(Path::FieldUri(uri)))
        } else if e.is(Ns::Types, "ExtendedFieldURI") {
            Ok(Ok(Path::ExtendedFieldUri(ExtendedFieldUri::read(r, e)?)))
        } else {
            Ok(Err(e))
        }
    }

    /// Writes the path element.
    pub(crate) fn write_path(&self, w: &mut XmlWriter) {
        match self {
            Path::FieldUri(uri) => w.tag("t:FieldURI").attr("FieldURI", uri).empty(),
            Path::ExtendedFieldUri(x) => x.write(w, "t:ExtendedFieldURI"),
        }
    }
}

// Hand-written: a repeated choice of the `t:Path` substitution group, which `xml_struct!` cannot
// express.
/// A list of paths (`t:NonEmptyArrayOfPathsToElementType`), e.g. `AdditionalProperties`.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Paths(pub Vec<Path>);

impl XmlElement for Paths {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut paths = Vec::new();
        while let Some(child) = r.next_child(&e)? {
            match Path::read_any(r, child)? {
                Ok(p) => paths.push(p),
                Err(other) => r.skip(other)?,
            }
        }
        Ok(Paths(paths))
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| {
            for p in &self.0 {
                p.write_path(w);
            }
        });
    }
}

// Hand-written: a convenience constructor.
impl ItemShape {
    /// `base` plus `extra` properties.
    pub fn new(base: BaseShape, extra: Vec<Path>) -> Self {
        Self {
            base_shape: base,
            body_type: None,
            additional_properties: (!extra.is_empty()).then_some(Paths(extra)),
        }
    }
}

// Hand-written: `t:FieldURIOrConstantType` is a choice of a path (a substitution group) and a
// constant, which `xml_struct!` cannot express; taskbridge only compares with constants.
xml_struct! {
    /// The right-hand side of a comparison (`t:FieldURIOrConstantType`, constant form).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct FieldUriOrConstant {
        /// The constant.
        pub constant: opt Constant = t "Constant",
    }
}

// Hand-written: `t:IsEqualToType` is a path (a choice of FieldURI / ExtendedFieldURI) and a
// `FieldURIOrConstant` (another choice), which `xml_struct!` cannot express.
/// `t:IsEqualTo`: a property equals a constant.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/isequalto>.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IsEqualTo {
    /// The property.
    pub path: Path,
    /// The constant (`None` when the server got something other than a constant).
    pub value: Option<String>,
}

// Hand-written: `t:SearchExpression` is a substitution group (a Rust enum, which `xml_struct!`
// cannot express); our subset has only `IsEqualTo`, any other is kept by name in `Other`.
/// A search expression (`t:SearchExpression` substitution group); taskbridge uses `IsEqualTo`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SearchExpression {
    /// Equality on one property.
    IsEqualTo(IsEqualTo),
    /// An expression this version does not evaluate (kept by name).
    Other(String),
}

// Hand-written: its one child is any member of the `t:SearchExpression` substitution group,
// which `xml_struct!` cannot express.
/// A restriction (`t:RestrictionType`): one search expression.
/// See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/restriction>.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Restriction(pub SearchExpression);

impl Restriction {
    /// `path == value`.
    pub fn equals(path: Path, value: impl Into<String>) -> Self {
        Restriction(SearchExpression::IsEqualTo(IsEqualTo {
            path,
            value: Some(value.into()),
        }))
    }
}

impl XmlElement for Restriction {
    fn read<'i>(r: &mut XmlReader<'i>, e: Element<'i>) -> Result<Self, DecodeError> {
        let mut expr = None;
        while let Some(child) = r.next_child(&e)? {
            if expr.is_some() {
                r.skip(child)?;
            } else if child.is(Ns::Types, "IsEqualTo") {
                let mut path = None;
                let mut value = None;
                let outer = child;
                while let Some(part) = r.next_child(&outer)? {
                    if part.is(Ns::Types, "FieldURIOrConstant") {
                        let c = FieldUriOrConstant::read(r, part)?;
                        value = c.constant.map(|c| c.value);
                    } else {
                        match Path::read_any(r, part)? {
                            Ok(p) => path = Some(p),
                            Err(other) => r.skip(other)?,
                        }
                    }
                }
                let path = path.ok_or_else(|| DecodeError::MissingElement {
                    path: "Restriction/IsEqualTo".into(),
                    element: "Path".into(),
                })?;
                expr = Some(SearchExpression::IsEqualTo(IsEqualTo { path, value }));
            } else {
                expr = Some(SearchExpression::Other(child.name_lossy()));
                r.skip(child)?;
            }
        }
        expr.map(Restriction)
            .ok_or_else(|| DecodeError::MissingElement {
                path: "Restriction".into(),
                element: "SearchExpression".into(),
            })
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.tag(name).children(|w| match &self.0 {
            SearchExpression::IsEqualTo(eq) => w.tag("t:IsEqualTo").children(|w| {
                eq.path.write_path(w);
                w.tag("t:FieldURIOrConstant").children(|w| {
                    w.tag("t:Constant")
                        .attr("Value", eq.value.as_deref().unwrap_or_default())
                        .empty();
                });
            }),
            // Never produced by our client; a simulator echoing it has nothing sensible to write.
            SearchExpression::Other(_) => {}
        });
    }
}

impl crate::xml::Absent for Paths {}

impl crate::xml::Absent for Restriction {}
