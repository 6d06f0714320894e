//! [`Secret`]: a password, token or client secret that never shows up in `Debug`, `Display`,
//! logs or error messages.
//!
//! Every credential taskbridge holds is a `Secret`. Reading its value takes an explicit
//! [`Secret::expose`], so a stray `{:?}` on a config struct prints `***` instead of the value.

use std::fmt;

/// A secret string (password, bearer token, client secret). `Debug` and `Display` print `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Only for putting it on the wire; never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

// Deserializable so that configuration files can hold secrets; deliberately not `Serialize`,
// so a secret cannot be written back out by accident.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_inside_a_struct_debug_is_redacted() {
        #[derive(Debug)]
        #[allow(dead_code)] // only read through Debug
        struct Creds {
            user: String,
            password: Secret,
        }
        let c = Creds {
            user: "bob".into(),
            password: "hunter2".into(),
        };
        let text = format!("{c:?} {c:#?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("bob"));
    }

    #[test]
    fn secret_deserializes_from_a_string() {
        let s: Secret = serde_json::from_str("\"tok\"").expect("json");
        assert_eq!(s.expose(), "tok");
    }
}
