//! The XML-level decoding error: why a message could not be read, with the element path where
//! that is known. Every layer above the codec reports it; [`crate::error::Error`] wraps it for a
//! whole call.

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is not well-formed XML.
    #[error("malformed XML at line {line}, column {column}: {message}")]
    Malformed {
        /// Line of the problem, from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
        /// What quick-xml reported.
        message: String,
    },
    /// The input ended inside an element.
    #[error("truncated XML: input ends at line {line}, column {column} inside an open element")]
    Truncated {
        /// Line where the input ends.
        line: usize,
        /// Column where the input ends.
        column: usize,
    },
    /// The input holds no element at all.
    #[error("empty input: no XML element found")]
    Empty,
    /// A `<!DOCTYPE>` was present; EWS never sends one, and refusing it rules out entity tricks.
    #[error("a DOCTYPE is not allowed in an EWS message")]
    DocTypeRefused,
    /// An entity other than the five predefined ones.
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    /// The input is larger than the configured cap.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The document element is not what was expected.
    #[error("expected {expected}, found element {found}")]
    Unexpected {
        /// What the caller expected.
        expected: &'static str,
        /// What was found (namespace and local name).
        found: String,
    },
    /// A known element stands where the schema does not allow it (strict reading only).
    #[error("{parent}: element {element} is out of schema order (line {line}, column {column})")]
    OutOfOrder {
        /// The parent element.
        parent: String,
        /// The misplaced element.
        element: String,
        /// Line of the element's end, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
    },
    /// A required element is missing.
    #[error("{path}: required element {element} is missing")]
    MissingElement {
        /// Path of the parent element.
        path: String,
        /// Local name of the missing element.
        element: String,
    },
    /// A required attribute is missing.
    #[error("{element}: required attribute {attribute} is missing")]
    MissingAttribute {
        /// Path of the element.
        element: String,
        /// Name of the missing attribute.
        attribute: &'static str,
    },
    /// An element or attribute value does not parse.
    #[error("{path}: invalid value {value:?}, expected {expected}")]
    InvalidValue {
        /// Path of the element or attribute.
        path: String,
        /// The value (shortened).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl DecodeError {
    /// Prefixes the element path of this error with `parent`.
    pub fn within(mut self, parent: &str) -> Self {
        match &mut self {
            DecodeError::MissingElement { path, .. } | DecodeError::InvalidValue { path, .. } => {
                path.insert(0, '/');
                path.insert_str(0, parent);
            }
            DecodeError::MissingAttribute { element, .. } => {
                element.insert(0, '/');
                element.insert_str(0, parent);
            }
            _ => {}
        }
        self
    }
}
