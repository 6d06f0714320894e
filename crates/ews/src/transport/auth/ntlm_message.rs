//! NTLMv2 messages as MS-NLMP defines them, written and read by hand where the `ntlmclient`
//! crate stops short: the AUTHENTICATE message with a message integrity code (MIC) and channel
//! bindings, which Exchange Server requires once Extended Protection is on (the default from
//! Exchange 2019 CU14 and in Exchange SE).
//!
//! Both halves use this module: the client (`ntlm`) builds the AUTHENTICATE message, and the
//! acceptor (`ntlm_server`, used by the simulator) recomputes the same values to check it. The
//! arithmetic is checked against the worked example of MS-NLMP section 4.2.4.
//!
//! Extended Protection in one paragraph: over TLS, the client hashes the server's certificate
//! (RFC 5929 `tls-server-end-point`), wraps it in a GSS channel bindings structure, and puts the
//! MD5 of that structure into the NTLMv2 blob's `MsvAvChannelBindings` pair. The blob is covered
//! by the NTLMv2 proof, so a machine in the middle, which presents its own certificate, cannot
//! relay the authentication. The MIC, an HMAC over all three handshake messages keyed with the
//! session key, stops the NEGOTIATE and CHALLENGE flags being tampered with.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

pub use crate::transport::channel_binding::ChannelBindings;

/// The NTLMSSP signature every message starts with.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// Message type of AUTHENTICATE.
pub const AUTHENTICATE: u32 = 3;

// NEGOTIATE flags (MS-NLMP 2.2.2.5).
pub const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
pub const REQUEST_TARGET: u32 = 0x0000_0004;
pub const NEGOTIATE_NTLM: u32 = 0x0000_0200;
pub const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
pub const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
pub const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
pub const NEGOTIATE_VERSION: u32 = 0x0200_0000;
pub const NEGOTIATE_128: u32 = 0x2000_0000;
pub const NEGOTIATE_KEY_EXCH: u32 = 0x4000_0000;

// AV_PAIR ids (MS-NLMP 2.2.2.1).
pub const MSV_AV_EOL: u16 = 0;
pub const MSV_AV_FLAGS: u16 = 6;
pub const MSV_AV_TIMESTAMP: u16 = 7;
pub const MSV_AV_TARGET_NAME: u16 = 9;
pub const MSV_AV_CHANNEL_BINDINGS: u16 = 10;

/// `MsvAvFlags` bit: the AUTHENTICATE message carries a MIC.
pub const AV_FLAG_MIC_PRESENT: u32 = 0x0000_0002;

/// Where the MIC sits in an AUTHENTICATE message: after the six field descriptors, the flags and
/// the version.
pub const MIC_OFFSET: usize = 72;
/// Size of the AUTHENTICATE message's fixed part; the payload follows it.
const AUTHENTICATE_FIXED: usize = MIC_OFFSET + 16;

/// The version we announce: Windows 10.0 build 20348, NTLMSSP_REVISION_W2K3. Only for debugging
/// on the server side, as MS-NLMP says.
const VERSION: [u8; 8] = [10, 0, 0x4c, 0x4f, 0, 0, 0, 15];

type HmacMd5 = Hmac<Md5>;

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <HmacMd5 as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// UTF-16LE, the encoding of every string in a Unicode NTLM exchange.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

pub fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// One AV_PAIR of a target info list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvPair {
    pub id: u16,
    pub value: Vec<u8>,
}

/// Reads an AV_PAIR list up to `MsvAvEOL` (or the end of the bytes). `None` when a pair runs
/// past the end.
pub fn read_av_pairs(bytes: &[u8]) -> Option<Vec<AvPair>> {
    let mut pairs = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let id = u16_at(bytes, at)?;
        let len = usize::from(u16_at(bytes, at + 2)?);
        if id == MSV_AV_EOL {
            break;
        }
        let value = bytes.get(at + 4..at + 4 + len)?.to_vec();
        pairs.push(AvPair { id, value });
        at += 4 + len;
    }
    Some(pairs)
}

/// Writes an AV_PAIR list, ending it with `MsvAvEOL`.
pub fn write_av_pairs(pairs: &[AvPair]) -> Vec<u8> {
    let mut out = Vec::new();
    for pair in pairs {
        out.extend_from_slice(&pair.id.to_le_bytes());
        // Every value we write is a name, a time, a hash or the server's own pair.
        out.extend_from_slice(&(pair.value.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&pair.value);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the MD4 of the password, over the upper-cased
/// user name and the domain.
pub fn ntowf_v2(user: &str, domain: &str, password: &str) -> [u8; 16] {
    use md4::Md4;
    let nt_hash: [u8; 16] = Md4::digest(utf16le(password)).into();
    hmac_md5(
        &nt_hash,
        &[&utf16le(&user.to_uppercase()), &utf16le(domain)],
    )
}

/// The NTLMv2 response computation of MS-NLMP 3.3.2.
pub struct NtlmV2Response {
    /// NtChallengeResponse: NTProofStr followed by the client's blob.
    pub nt_response: Vec<u8>,
    /// SessionBaseKey, which keys the MIC (there is no key exchange).
    pub session_base_key: [u8; 16],
}

/// The client's blob (NTLMv2_CLIENT_CHALLENGE): version 1.1, time, client challenge, AV pairs.
pub fn client_blob(time: u64, client_challenge: [u8; 8], target_info: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(32 + target_info.len());
    blob.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    blob.extend_from_slice(&time.to_le_bytes());
    blob.extend_from_slice(&client_challenge);
    blob.extend_from_slice(&[0, 0, 0, 0]);
    blob.extend_from_slice(target_info);
    blob.extend_from_slice(&[0, 0, 0, 0]);
    blob
}

/// NTProofStr and SessionBaseKey for `blob` answering `server_challenge`.
pub fn ntlm_v2_response(
    response_key: &[u8; 16],
    server_challenge: &[u8; 8],
    blob: &[u8],
) -> NtlmV2Response {
    let proof = hmac_md5(response_key, &[server_challenge, blob]);
    let session_base_key = hmac_md5(response_key, &[&proof]);
    let mut nt_response = proof.to_vec();
    nt_response.extend_from_slice(blob);
    NtlmV2Response {
        nt_response,
        session_base_key,
    }
}

/// The MIC: HMAC-MD5 keyed with the exported session key over NEGOTIATE, CHALLENGE and the
/// AUTHENTICATE message with its MIC field zeroed.
pub fn mic(
    session_key: &[u8; 16],
    negotiate: &[u8],
    challenge: &[u8],
    authenticate: &[u8],
) -> [u8; 16] {
    let mut zeroed = authenticate.to_vec();
    if let Some(field) = zeroed.get_mut(MIC_OFFSET..MIC_OFFSET + 16) {
        field.fill(0);
    }
    hmac_md5(session_key, &[negotiate, challenge, &zeroed])
}

/// The NEGOTIATE message we send: Unicode, NTLM, extended session security, target info wanted,
/// and our version; no domain or workstation is supplied (Windows leaves them out too).
pub fn negotiate_message() -> Vec<u8> {
    let flags = NEGOTIATE_UNICODE
        | REQUEST_TARGET
        | NEGOTIATE_NTLM
        | NEGOTIATE_ALWAYS_SIGN
        | NEGOTIATE_EXTENDED_SESSIONSECURITY
        | NEGOTIATE_TARGET_INFO
        | NEGOTIATE_VERSION
        | NEGOTIATE_128;
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    // Empty domain and workstation fields, their offsets at the end of the fixed part.
    for _ in 0..2 {
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&40u32.to_le_bytes());
    }
    m.extend_from_slice(&VERSION);
    m
}

/// What the client needs of a CHALLENGE message.
#[derive(Debug)]
pub struct Challenge {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    pub target_info: Vec<AvPair>,
}

/// Reads a CHALLENGE message (MS-NLMP 2.2.1.2).
pub fn read_challenge(message: &[u8]) -> Result<Challenge, String> {
    if message.len() < 48 || &message[..8] != SIGNATURE {
        return Err("not an NTLM message".into());
    }
    let kind = u32_at(message, 8).unwrap_or_default();
    if kind != 2 {
        return Err(format!(
            "expected an NTLM CHALLENGE, got message type {kind}"
        ));
    }
    let flags = u32_at(message, 20).unwrap_or_default();
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&message[24..32]);
    let len = usize::from(u16_at(message, 40).unwrap_or_default());
    let offset = u32_at(message, 44).unwrap_or_default() as usize;
    let info = if len == 0 {
        &[][..]
    } else {
        message
            .get(offset..offset.saturating_add(len))
            .ok_or("the CHALLENGE's target info lies outside the message")?
    };
    let target_info = read_av_pairs(info).ok_or("the CHALLENGE's target info is truncated")?;
    Ok(Challenge {
        flags,
        server_challenge,
        target_info,
    })
}

/// Who authenticates, and to what.
pub struct Identity<'a> {
    pub user: &'a str,
    pub domain: &'a str,
    pub password: &'a str,
    pub workstation: &'a str,
    /// The service principal name of the server, `HTTP/host`.
    pub target_name: &'a str,
}

/// Builds the AUTHENTICATE message answering `challenge_bytes` (the CHALLENGE as received), with
/// channel bindings and a MIC over `negotiate`, the CHALLENGE and itself.
///
/// `client_challenge` is random in use; `now` (a FILETIME) is used only when the server sent no
/// `MsvAvTimestamp`, since the blob must carry the server's time when it sent one.
pub fn authenticate_message(
    who: &Identity<'_>,
    negotiate: &[u8],
    challenge_bytes: &[u8],
    bindings: ChannelBindings,
    client_challenge: [u8; 8],
    now: u64,
) -> Result<Vec<u8>, String> {
    let challenge = read_challenge(challenge_bytes)?;
    // The server's pairs, then ours: flags (MIC present), channel bindings and target name.
    let mut pairs: Vec<AvPair> = challenge
        .target_info
        .iter()
        .filter(|p| {
            !matches!(
                p.id,
                MSV_AV_FLAGS | MSV_AV_CHANNEL_BINDINGS | MSV_AV_TARGET_NAME
            )
        })
        .cloned()
        .collect();
    let server_flags = challenge
        .target_info
        .iter()
        .find(|p| p.id == MSV_AV_FLAGS)
        .and_then(|p| u32_at(&p.value, 0))
        .unwrap_or(0);
    let time = challenge
        .target_info
        .iter()
        .find(|p| p.id == MSV_AV_TIMESTAMP)
        .and_then(|p| Some(u64::from_le_bytes(p.value.get(..8)?.try_into().ok()?)))
        .unwrap_or(now);
    pairs.push(AvPair {
        id: MSV_AV_FLAGS,
        value: (server_flags | AV_FLAG_MIC_PRESENT).to_le_bytes().to_vec(),
    });
    pairs.push(AvPair {
        id: MSV_AV_CHANNEL_BINDINGS,
        value: bindings.0.to_vec(),
    });
    pairs.push(AvPair {
        id: MSV_AV_TARGET_NAME,
        value: utf16le(who.target_name),
    });
    let blob = client_blob(time, client_challenge, &write_av_pairs(&pairs));
    let key = ntowf_v2(who.user, who.domain, who.password);
    let response = ntlm_v2_response(&key, &challenge.server_challenge, &blob);

    // With a MIC the LM response is Z(24) (MS-NLMP 3.1.5.1.2).
    let lm_response = [0u8; 24];
    let fields: [Vec<u8>; 6] = [
        lm_response.to_vec(),
        response.nt_response,
        utf16le(who.domain),
        utf16le(who.user),
        utf16le(who.workstation),
        Vec::new(),
    ];
    let flags = (challenge.flags
        & (NEGOTIATE_ALWAYS_SIGN
            | NEGOTIATE_EXTENDED_SESSIONSECURITY
            | NEGOTIATE_TARGET_INFO
            | NEGOTIATE_128))
        | NEGOTIATE_UNICODE
        | NEGOTIATE_NTLM
        | NEGOTIATE_VERSION;
    let payload_len: usize = fields.iter().map(Vec::len).sum();
    if AUTHENTICATE_FIXED + payload_len > usize::from(u16::MAX) {
        return Err("the NTLM AUTHENTICATE message would be too large".into());
    }
    let mut m = Vec::with_capacity(AUTHENTICATE_FIXED + payload_len);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&AUTHENTICATE.to_le_bytes());
    let mut offset = AUTHENTICATE_FIXED as u32;
    for field in &fields {
        let len = field.len() as u16;
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&offset.to_le_bytes());
        offset += u32::from(len);
    }
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&VERSION);
    m.extend_from_slice(&[0u8; 16]);
    for field in &fields {
        m.extend_from_slice(field);
    }
    let code = mic(&response.session_base_key, negotiate, challenge_bytes, &m);
    m[MIC_OFFSET..MIC_OFFSET + 16].copy_from_slice(&code);
    Ok(m)
}

/// The fields of an AUTHENTICATE message the acceptor checks.
#[derive(Debug)]
pub struct Authenticate {
    pub flags: u32,
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub encrypted_session_key: Vec<u8>,
}

/// Reads an AUTHENTICATE message (MS-NLMP 2.2.1.3); strings are UTF-16LE when the message says
/// Unicode, else 8-bit.
pub fn read_authenticate(message: &[u8]) -> Result<Authenticate, String> {
    if message.len() < 64 || &message[..8] != SIGNATURE {
        return Err(format!(
            "{} bytes is not an AUTHENTICATE message",
            message.len()
        ));
    }
    let flags = u32_at(message, 60).unwrap_or_default();
    let field = |index: usize| -> Result<Vec<u8>, String> {
        let at = 12 + 8 * index;
        let len = usize::from(u16_at(message, at).unwrap_or_default());
        let offset = u32_at(message, at + 4).unwrap_or_default() as usize;
        if len == 0 {
            return Ok(Vec::new());
        }
        message
            .get(offset..offset.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("field {index} lies outside the message"))
    };
    let text = |bytes: Vec<u8>| -> Result<String, String> {
        if flags & NEGOTIATE_UNICODE != 0 {
            if !bytes.len().is_multiple_of(2) {
                return Err("odd-length UTF-16 string".into());
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| "invalid UTF-16 string".to_string())
        } else {
            Ok(bytes.iter().map(|&b| char::from(b)).collect())
        }
    };
    Ok(Authenticate {
        flags,
        nt_response: field(1)?,
        domain: text(field(2)?)?,
        user: text(field(3)?)?,
        encrypted_session_key: field(5)?,
    })
}

/// Now as a Windows FILETIME: 100 ns ticks since 1601-01-01 UTC.
pub fn filetime_now() -> u64 {
    const UNIX_TO_1601_SECS: u64 = 11_644_473_600;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_secs() + UNIX_TO_1601_SECS) * 10_000_000
        + u64::from(since_unix.subsec_nanos()) / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // MS-NLMP 4.2.4: user "User", domain "Domain", password "Password", server challenge
    // 0123456789abcdef, client challenge aa * 8, time 0, target info NbDomainName "Domain" and
    // NbComputerName "Server".
    fn section_4_2_4_blob() -> Vec<u8> {
        let info = write_av_pairs(&[
            AvPair {
                id: 2,
                value: utf16le("Domain"),
            },
            AvPair {
                id: 1,
                value: utf16le("Server"),
            },
        ]);
        client_blob(0, [0xaa; 8], &info)
    }

    #[test]
    fn ntowf_v2_is_the_response_key_of_ms_nlmp_4_2_4() {
        assert_eq!(
            hex(&ntowf_v2("User", "Domain", "Password")),
            "0c868a403bfd7a93a3001ef22ef02e3f"
        );
    }

    #[test]
    fn ntlm_v2_proof_and_session_base_key_are_those_of_ms_nlmp_4_2_4() {
        let key = ntowf_v2("User", "Domain", "Password");
        let server = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let r = ntlm_v2_response(&key, &server, &section_4_2_4_blob());
        assert_eq!(
            hex(&r.nt_response[..16]),
            "68cd0ab851e51c96aabc927bebef6a1c"
        );
        assert_eq!(hex(&r.session_base_key), "8de40ccadbc14a82f15cb0ad0de95ca3");
    }

    fn challenge_bytes(info: &[AvPair]) -> Vec<u8> {
        let info = write_av_pairs(info);
        let mut m = Vec::new();
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&2u32.to_le_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]);
        let flags = NEGOTIATE_UNICODE | NEGOTIATE_NTLM | NEGOTIATE_TARGET_INFO;
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&56u32.to_le_bytes());
        m.extend_from_slice(&VERSION);
        m.extend_from_slice(&info);
        m
    }

    #[test]
    fn authenticate_carries_bindings_target_name_server_time_and_a_mic_that_checks() {
        let stamp = 0x01d9_0000_0000_0000u64;
        let challenge = challenge_bytes(&[
            AvPair {
                id: 2,
                value: utf16le("Domain"),
            },
            AvPair {
                id: MSV_AV_TIMESTAMP,
                value: stamp.to_le_bytes().to_vec(),
            },
        ]);
        let negotiate = negotiate_message();
        let who = Identity {
            user: "User",
            domain: "Domain",
            password: "Password",
            workstation: "WS",
            target_name: "HTTP/mail.contoso.com",
        };
        let bindings = ChannelBindings::tls_server_end_point(b"cert");
        let m = authenticate_message(&who, &negotiate, &challenge, bindings, [0xaa; 8], 7)
            .expect("authenticate");
        let a = read_authenticate(&m).expect("read back");
        assert_eq!((a.user.as_str(), a.domain.as_str()), ("User", "Domain"));
        let blob = &a.nt_response[16..];
        assert_eq!(
            blob[8..16],
            stamp.to_le_bytes(),
            "the server's time, not ours"
        );
        let pairs = read_av_pairs(&blob[28..]).expect("pairs");
        let value = |id| pairs.iter().find(|p| p.id == id).map(|p| p.value.clone());
        assert_eq!(value(MSV_AV_CHANNEL_BINDINGS), Some(bindings.0.to_vec()));
        assert_eq!(
            value(MSV_AV_TARGET_NAME),
            Some(utf16le("HTTP/mail.contoso.com"))
        );
        assert_eq!(
            value(MSV_AV_FLAGS),
            Some(AV_FLAG_MIC_PRESENT.to_le_bytes().to_vec())
        );
        // The MIC recomputed from the session key the password gives.
        let key = ntowf_v2("User", "Domain", "Password");
        let r = ntlm_v2_response(
            &key,
            &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            blob,
        );
        assert_eq!(r.nt_response, a.nt_response);
        let expected = mic(&r.session_base_key, &negotiate, &challenge, &m);
        assert_eq!(m[MIC_OFFSET..MIC_OFFSET + 16], expected);
        // Any change to the NEGOTIATE breaks it.
        let mut other = negotiate.clone();
        other[12] ^= 0x01;
        assert_ne!(mic(&r.session_base_key, &other, &challenge, &m), expected);
    }

    #[test]
    fn reading_truncated_messages_is_an_error_not_a_panic() {
        let challenge = challenge_bytes(&[]);
        let who = Identity {
            user: "u",
            domain: "d",
            password: "p",
            workstation: "w",
            target_name: "HTTP/h",
        };
        let m = authenticate_message(
            &who,
            &negotiate_message(),
            &challenge,
            ChannelBindings::NONE,
            [1; 8],
            1,
        )
        .expect("authenticate");
        for n in 0..m.len() {
            let _ = read_authenticate(&m[..n]);
        }
        for n in 0..challenge.len() {
            let _ = read_challenge(&challenge[..n]);
        }
        assert!(read_av_pairs(&[1, 0, 9, 0, 1]).is_none());
    }
}
