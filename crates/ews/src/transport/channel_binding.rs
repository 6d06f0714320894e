//! TLS channel bindings (RFC 5929 `tls-server-end-point`) as NTLM and Kerberos carry them for
//! Windows Extended Protection: a hash of the server's certificate, so that an authentication
//! made to a machine in the middle (which presents its own certificate) cannot be relayed.

use md5::{Digest, Md5};

/// The channel binding hash carried in `MsvAvChannelBindings`: the MD5 of a GSS channel bindings
/// structure. All zeros means "no channel bindings" (plain HTTP).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelBindings(pub [u8; 16]);

impl std::fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "ChannelBindings({hex})")
    }
}

impl ChannelBindings {
    /// No channel (plain HTTP): sixteen zero bytes.
    pub const NONE: ChannelBindings = ChannelBindings([0; 16]);

    /// Whether these are the all-zero "no bindings" value.
    pub fn is_none(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The bindings of a TLS connection whose server presented `certificate` (DER, the leaf):
    /// application data `tls-server-end-point:` + the certificate's hash (RFC 5929 section 4),
    /// inside a `gss_channel_bindings_struct` with no addresses (RFC 2744 section 3.11), hashed
    /// with MD5 as MS-NLMP 3.1.5.1.2 says.
    pub fn tls_server_end_point(certificate: &[u8]) -> ChannelBindings {
        let application_data = tls_server_end_point_data(certificate);
        let mut md5 = Md5::new();
        // initiator_addrtype, initiator_address length, acceptor_addrtype, acceptor_address
        // length: all zero; then the application data with its length.
        md5.update([0u8; 16]);
        md5.update((application_data.len() as u32).to_le_bytes());
        md5.update(&application_data);
        ChannelBindings(md5.finalize().into())
    }
}

/// The application data of the `tls-server-end-point` bindings of a TLS connection whose server
/// presented `certificate` (DER, the leaf): `tls-server-end-point:` + the certificate's hash
/// (RFC 5929 section 4). Kerberos hands this to GSSAPI, which builds and hashes the structure
/// itself.
pub fn tls_server_end_point_data(certificate: &[u8]) -> Vec<u8> {
    let mut application_data = b"tls-server-end-point:".to_vec();
    application_data.extend_from_slice(&certificate_hash(certificate));
    application_data
}

/// RFC 5929 4.1: the certificate is hashed with the hash of its own signature algorithm, except
/// that MD5 and SHA-1 (and anything without a hash of its own) become SHA-256.
fn certificate_hash(der: &[u8]) -> Vec<u8> {
    use sha2::{Sha256, Sha384, Sha512};
    match signature_hash(der) {
        SignatureHash::Sha384 => Sha384::digest(der).to_vec(),
        SignatureHash::Sha512 => Sha512::digest(der).to_vec(),
        SignatureHash::Sha256 => Sha256::digest(der).to_vec(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SignatureHash {
    Sha256,
    Sha384,
    Sha512,
}

// DER-encoded object identifiers (content bytes only).
const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// The hash named by a certificate's outer `signatureAlgorithm`; SHA-256 for anything else,
/// including a certificate we cannot read (the binding then simply fails to match).
fn signature_hash(der: &[u8]) -> SignatureHash {
    let algorithm = (|| {
        let (_, certificate) = der_element(der, 0x30)?;
        let (rest, _tbs) = der_element(certificate, 0x30)?;
        let (_, algorithm) = der_element(rest, 0x30)?;
        Some(algorithm)
    })();
    let Some(algorithm) = algorithm else {
        return SignatureHash::Sha256;
    };
    let Some((params, oid)) = der_element(algorithm, 0x06) else {
        return SignatureHash::Sha256;
    };
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    match oid {
        o if o == OID_SHA384_RSA || o == OID_ECDSA_SHA384 => SignatureHash::Sha384,
        o if o == OID_SHA512_RSA || o == OID_ECDSA_SHA512 => SignatureHash::Sha512,
        // RSASSA-PSS names its hash in the parameters.
        o if o == OID_RSA_PSS && contains(params, OID_SHA384) => SignatureHash::Sha384,
        o if o == OID_RSA_PSS && contains(params, OID_SHA512) => SignatureHash::Sha512,
        _ => SignatureHash::Sha256,
    }
}

/// Reads one DER element with `tag` at the start of `bytes`: (what follows it, its content).
fn der_element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *bytes.first()? != tag {
        return None;
    }
    let first = *bytes.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((bytes.get(end..)?, bytes.get(head..end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn channel_bindings_hash_the_gss_structure_around_the_certificate_hash() {
        // Computed independently (Python hashlib) for a byte string that is not a certificate:
        // its hash falls back to SHA-256.
        // md5(16 * b"\0" + (21 + 32).to_bytes(4, "little") + b"tls-server-end-point:" + sha256(b"abc"))
        let b = ChannelBindings::tls_server_end_point(b"abc");
        assert_eq!(hex(&b.0), "af170326dfd6fc6cc21c3364343df0b2");
        assert!(!b.is_none());
        assert!(ChannelBindings::NONE.is_none());
    }

    #[test]
    fn certificate_hash_follows_the_signature_algorithm() {
        // Certificate ::= SEQUENCE { tbs SEQUENCE {}, algorithm SEQUENCE { OID }, BIT STRING }
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut inner = vec![0x30, 0x00, 0x30, alg.len() as u8];
            inner.extend_from_slice(&alg);
            inner.extend_from_slice(&[0x03, 0x01, 0x00]);
            let mut c = vec![0x30, inner.len() as u8];
            c.extend_from_slice(&inner);
            c
        };
        assert_eq!(signature_hash(&cert(OID_SHA384_RSA)), SignatureHash::Sha384);
        assert_eq!(
            signature_hash(&cert(OID_ECDSA_SHA512)),
            SignatureHash::Sha512
        );
        // sha256WithRSAEncryption and sha1WithRSAEncryption both hash with SHA-256.
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        assert_eq!(signature_hash(&cert(&sha256_rsa)), SignatureHash::Sha256);
        assert_eq!(signature_hash(&cert(&sha1_rsa)), SignatureHash::Sha256);
        assert_eq!(certificate_hash(&cert(OID_SHA384_RSA)).len(), 48);
        // Garbage never panics.
        for n in 0..20 {
            let _ = signature_hash(&cert(OID_SHA384_RSA)[..n]);
        }
    }
}
