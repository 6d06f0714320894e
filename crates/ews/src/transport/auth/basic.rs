//! HTTP Basic authentication: `user:password` in every request, over TLS only in practice.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;

use crate::error::Error;
use crate::secret::Secret;

/// The `Authorization` value for `user` / `password`, marked sensitive.
pub(crate) fn header(user: &str, password: &Secret) -> Result<HeaderValue, Error> {
    let token = BASE64.encode(format!("{user}:{}", password.expose()));
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| Error::Config("the Basic credentials do not fit in a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_encodes_user_and_password() {
        let v = header("Aladdin", &Secret::new("open sesame")).expect("header");
        assert_eq!(
            v.to_str().expect("ascii"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(v.is_sensitive());
        assert_eq!(format!("{v:?}"), "Sensitive");
    }
}
