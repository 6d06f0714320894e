//! The acceptor (server) half of NTLM: issues the CHALLENGE message and verifies the NTLMv2
//! proof in the AUTHENTICATE message.
//!
//! taskbridge itself only ever plays the client; this half exists for the bundled EWS simulator
//! (`sim`) and for the transport tests, so that they check a real NTLMv2 handshake against a known
//! password instead of waving any `Authorization: NTLM ...` header through.
//!
//! Use it per TCP connection: on a NEGOTIATE, call [`challenge`] and answer `401` with
//! [`ServerChallenge::www_authenticate`]; keep the [`ServerChallenge`] with the connection; on
//! the AUTHENTICATE that follows on the same connection, call [`verify`]. The connection is then
//! authenticated as the returned [`NtlmIdentity`].
//!
//! Only NTLMv2 is accepted (NTLMv1 and LM responses are refused). A message integrity code
//! (MIC) is checked whenever the client says it sent one. Channel bindings are checked as the
//! [`ExtendedProtection`] setting says, as IIS does for Exchange's virtual directories: `Allow`
//! refuses wrong bindings but lets clients without any through, `Require` refuses those too.
//! See <https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/>.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use subtle::ConstantTimeEq;

use taskbridge_ews::transport::auth::ntlm_message::{
    self, AV_FLAG_MIC_PRESENT, MSV_AV_CHANNEL_BINDINGS, MSV_AV_FLAGS,
};
pub use taskbridge_ews::transport::channel_binding::ChannelBindings;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE: u32 = 1;
const CHALLENGE: u32 = 2;
const AUTHENTICATE: u32 = 3;

// NEGOTIATE flags (MS-NLMP 2.2.2.5) the acceptor reads or sets.
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_VERSION: u32 = 0x0200_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;

// AV_PAIR ids (MS-NLMP 2.2.2.1).
const MSV_AV_EOL: u16 = 0;
const MSV_AV_NB_COMPUTER_NAME: u16 = 1;
const MSV_AV_NB_DOMAIN_NAME: u16 = 2;
const MSV_AV_DNS_COMPUTER_NAME: u16 = 3;
const MSV_AV_DNS_DOMAIN_NAME: u16 = 4;
const MSV_AV_TIMESTAMP: u16 = 7;

/// The NetBIOS domain name the acceptor announces.
pub const TARGET_DOMAIN: &str = "TASKBRIDGE";
/// The NetBIOS computer name the acceptor announces.
pub const TARGET_COMPUTER: &str = "EWS-SIM";

/// Smallest NTLMv2 response: the 16-byte proof and the fixed 28-byte head of the blob.
const MIN_NTLMV2_RESPONSE: usize = 16 + 28;

/// Why an NTLM message was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NtlmError {
    /// Not a well-formed NTLM message.
    #[error("malformed NTLM message: {0}")]
    Malformed(String),
    /// An NTLM message of another type than the step expects.
    #[error("expected NTLM message type {expected}, got type {found}")]
    UnexpectedMessage {
        /// The type the step expects (1 NEGOTIATE, 3 AUTHENTICATE).
        expected: u32,
        /// The type received.
        found: u32,
    },
    /// A well-formed message this acceptor does not accept (NTLMv1, LM only, anonymous).
    #[error("unsupported NTLM authentication: {0}")]
    Unsupported(&'static str),
    /// `password_of` knows no such user.
    #[error("unknown user {domain}\\{user}")]
    UnknownUser {
        /// The user name as sent.
        user: String,
        /// The domain as sent (empty for `user@domain` names).
        domain: String,
    },
    /// The client's channel bindings are missing where they are required, or do not match the
    /// TLS channel (a relayed authentication, or a client without Extended Protection).
    #[error("channel bindings refused: {0}")]
    ChannelBindings(&'static str),
    /// The message integrity code does not match the three handshake messages.
    #[error("the NTLM message integrity code does not match")]
    BadMic,
    /// The NTLMv2 proof does not match the user's password.
    #[error("wrong password for {domain}\\{user}")]
    WrongPassword {
        /// The user name as sent.
        user: String,
        /// The domain as sent (empty for `user@domain` names).
        domain: String,
    },
}

/// A CHALLENGE issued on one connection, kept until the AUTHENTICATE arrives.
#[derive(Clone)]
pub struct ServerChallenge {
    challenge: [u8; 8],
    message: Vec<u8>,
    /// The NEGOTIATE it answers, which the MIC covers.
    negotiate: Vec<u8>,
}

impl std::fmt::Debug for ServerChallenge {
    // The challenge is a nonce, not a secret, but there is no reason to print it either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChallenge").finish_non_exhaustive()
    }
}

impl ServerChallenge {
    /// The random 8-byte server challenge.
    pub fn server_challenge(&self) -> [u8; 8] {
        self.challenge
    }

    /// The CHALLENGE message (type 2) as bytes.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The `WWW-Authenticate` header value that carries the CHALLENGE: `NTLM <base64>`.
    pub fn www_authenticate(&self) -> String {
        format!("NTLM {}", BASE64.encode(&self.message))
    }
}

/// Who authenticated: the user and domain exactly as the client sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtlmIdentity {
    /// The user name (`user`, or `user@domain` when the client used that form).
    pub user: String,
    /// The domain (empty when the client used `user@domain`).
    pub domain: String,
}

/// Decodes the NTLM token of an `Authorization` header value (`NTLM <base64>`, or `Negotiate
/// <base64>` when the token is raw NTLMSSP). `None` for any other scheme or bad base64.
pub fn decode_authorization(value: &str) -> Option<Vec<u8>> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("NTLM") && !scheme.eq_ignore_ascii_case("Negotiate") {
        return None;
    }
    let bytes = BASE64.decode(token.trim()).ok()?;
    bytes.starts_with(SIGNATURE).then_some(bytes)
}

/// The message type of an NTLM message (1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE).
pub fn message_type(message: &[u8]) -> Result<u32, NtlmError> {
    if message.len() < 12 {
        return Err(NtlmError::Malformed(format!(
            "{} bytes is shorter than the NTLM header",
            message.len()
        )));
    }
    if &message[..8] != SIGNATURE {
        return Err(NtlmError::Malformed("no NTLMSSP signature".into()));
    }
    Ok(u32_at(message, 8))
}

/// Answers a NEGOTIATE (type 1) with a CHALLENGE (type 2): a fresh random 8-byte server
/// challenge, and target info naming [`TARGET_DOMAIN`] / [`TARGET_COMPUTER`] with the current
/// time as `MsvAvTimestamp`.
pub fn challenge(negotiate: &[u8]) -> Result<ServerChallenge, NtlmError> {
    let found = message_type(negotiate)?;
    if found != NEGOTIATE {
        return Err(NtlmError::UnexpectedMessage {
            expected: NEGOTIATE,
            found,
        });
    }
    if negotiate.len() < 16 {
        return Err(NtlmError::Malformed("NEGOTIATE without flags".into()));
    }
    let requested = u32_at(negotiate, 12);
    let mut challenge = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    let message = challenge_message(requested, challenge, ntlm_message::filetime_now());
    Ok(ServerChallenge {
        challenge,
        message,
        negotiate: negotiate.to_vec(),
    })
}

/// How an acceptor treats channel bindings (IIS's `extendedProtection` token checking).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExtendedProtection {
    /// Bindings are not checked.
    #[default]
    None,
    /// Bindings a client sends must match the channel; a client that sends none is let through.
    Allow,
    /// Every client must send bindings that match the channel.
    Require,
}

impl std::str::FromStr for ExtendedProtection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ExtendedProtection::None),
            "allow" => Ok(ExtendedProtection::Allow),
            "require" => Ok(ExtendedProtection::Require),
            other => Err(format!(
                "unknown extended protection {other:?} (none, allow or require)"
            )),
        }
    }
}

/// Verifies an AUTHENTICATE (type 3) against the challenge issued on the same connection,
/// without looking at channel bindings (see [`verify_bound`]).
pub fn verify(
    ch: &ServerChallenge,
    authenticate: &[u8],
    password_of: impl Fn(&str, &str) -> Option<String>,
) -> Result<NtlmIdentity, NtlmError> {
    verify_bound(
        ch,
        authenticate,
        password_of,
        ExtendedProtection::None,
        None,
    )
}

/// Verifies an AUTHENTICATE (type 3) against the challenge issued on the same connection.
///
/// Recomputes the NTLMv2 proof, HMAC-MD5 keyed with NTOWFv2 (from the password that
/// `password_of(user, domain)` returns) over the server challenge and the client's blob, and
/// compares it with the client's proof in constant time. Then checks the MIC if the client's
/// `MsvAvFlags` announce one, and the client's `MsvAvChannelBindings` against `channel` (the
/// bindings of the TLS connection; `None` over plain HTTP, where nothing can be bound) as
/// `policy` says.
pub fn verify_bound(
    ch: &ServerChallenge,
    authenticate: &[u8],
    password_of: impl Fn(&str, &str) -> Option<String>,
    policy: ExtendedProtection,
    channel: Option<ChannelBindings>,
) -> Result<NtlmIdentity, NtlmError> {
    let found = message_type(authenticate)?;
    if found != AUTHENTICATE {
        return Err(NtlmError::UnexpectedMessage {
            expected: AUTHENTICATE,
            found,
        });
    }
    let msg = ntlm_message::read_authenticate(authenticate).map_err(NtlmError::Malformed)?;
    let nt = &msg.nt_response;
    if msg.user.is_empty() && nt.is_empty() {
        return Err(NtlmError::Unsupported("anonymous authentication"));
    }
    if nt.len() == 24 {
        return Err(NtlmError::Unsupported("NTLMv1 response"));
    }
    if nt.len() < MIN_NTLMV2_RESPONSE {
        return Err(NtlmError::Malformed(format!(
            "NT response of {} bytes is too short for NTLMv2",
            nt.len()
        )));
    }
    let (proof, blob) = nt.split_at(16);
    if blob[0] != 1 || blob[1] != 1 {
        return Err(NtlmError::Malformed("unknown NTLMv2 blob version".into()));
    }
    let identity = NtlmIdentity {
        user: msg.user.clone(),
        domain: msg.domain.clone(),
    };
    let Some(password) = password_of(&identity.user, &identity.domain) else {
        return Err(NtlmError::UnknownUser {
            user: identity.user,
            domain: identity.domain,
        });
    };
    let key = ntlm_message::ntowf_v2(&identity.user, &identity.domain, &password);
    let expected = ntlm_message::ntlm_v2_response(&key, &ch.challenge, blob);
    if !bool::from(expected.nt_response[..16].ct_eq(proof)) {
        return Err(NtlmError::WrongPassword {
            user: identity.user,
            domain: identity.domain,
        });
    }
    // The proof covers the blob, so its pairs are the client's own from here on.
    let pairs = ntlm_message::read_av_pairs(&blob[28..])
        .ok_or_else(|| NtlmError::Malformed("truncated AV pairs in the NTLMv2 blob".into()))?;
    let av_flags = pairs
        .iter()
        .find(|p| p.id == MSV_AV_FLAGS)
        .and_then(|p| ntlm_message::u32_at(&p.value, 0))
        .unwrap_or(0);
    if av_flags & AV_FLAG_MIC_PRESENT != 0 {
        let session_key = exported_session_key(&msg, &expected.session_base_key)?;
        let mic = ntlm_message::mic(&session_key, &ch.negotiate, &ch.message, authenticate);
        let sent = authenticate
            .get(ntlm_message::MIC_OFFSET..ntlm_message::MIC_OFFSET + 16)
            .ok_or(NtlmError::BadMic)?;
        if !bool::from(mic.as_slice().ct_eq(sent)) {
            return Err(NtlmError::BadMic);
        }
    }
    let sent_bindings = pairs
        .iter()
        .find(|p| p.id == MSV_AV_CHANNEL_BINDINGS)
        .and_then(|p| <[u8; 16]>::try_from(p.value.as_slice()).ok())
        .map(ChannelBindings)
        .filter(|b| !b.is_none());
    match (policy, channel, sent_bindings) {
        (ExtendedProtection::None, _, _) | (_, None, _) => {}
        (ExtendedProtection::Allow, Some(_), None) => {}
        (ExtendedProtection::Require, Some(_), None) => {
            return Err(NtlmError::ChannelBindings(
                "the client sent no channel bindings",
            ));
        }
        (_, Some(channel), Some(sent)) => {
            if !bool::from(channel.0.ct_eq(&sent.0)) {
                return Err(NtlmError::ChannelBindings(
                    "the client's channel bindings are not those of this TLS channel",
                ));
            }
        }
    }
    Ok(identity)
}

/// The key the MIC is made with: the session base key, or the random session key the client
/// sent encrypted with it (RC4) when it negotiated a key exchange.
fn exported_session_key(
    msg: &ntlm_message::Authenticate,
    session_base_key: &[u8; 16],
) -> Result<[u8; 16], NtlmError> {
    if msg.flags & ntlm_message::NEGOTIATE_KEY_EXCH == 0 || msg.encrypted_session_key.is_empty() {
        return Ok(*session_base_key);
    }
    let encrypted: [u8; 16] = msg
        .encrypted_session_key
        .as_slice()
        .try_into()
        .map_err(|_| NtlmError::Malformed("the encrypted session key is not 16 bytes".into()))?;
    let mut key = encrypted;
    rc4(session_base_key, &mut key);
    Ok(key)
}

/// RC4 over `data` in place: NTLM's key exchange uses it once per handshake to carry the
/// session key.
fn rc4(key: &[u8], data: &mut [u8]) {
    let mut state: [u8; 256] = std::array::from_fn(|i| i as u8);
    let mut j = 0u8;
    for i in 0..256 {
        j = j.wrapping_add(state[i]).wrapping_add(key[i % key.len()]);
        state.swap(i, usize::from(j));
    }
    let (mut i, mut j) = (0u8, 0u8);
    for byte in data.iter_mut() {
        i = i.wrapping_add(1);
        j = j.wrapping_add(state[usize::from(i)]);
        state.swap(usize::from(i), usize::from(j));
        let k = state[usize::from(state[usize::from(i)].wrapping_add(state[usize::from(j)]))];
        *byte ^= k;
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn av_pair(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    // Our names and the timestamp are a few bytes; u16 always holds their length.
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// Builds the CHALLENGE message (MS-NLMP 2.2.1.2). Written by hand rather than with
/// `ntlmclient::ChallengeMessage::to_bytes`, which misplaces the target name in its payload.
fn challenge_message(requested: u32, challenge: [u8; 8], timestamp: u64) -> Vec<u8> {
    let mut flags = NEGOTIATE_UNICODE
        | REQUEST_TARGET
        | NEGOTIATE_NTLM
        | TARGET_TYPE_DOMAIN
        | NEGOTIATE_TARGET_INFO
        | NEGOTIATE_VERSION;
    flags |= requested
        & (NEGOTIATE_ALWAYS_SIGN
            | NEGOTIATE_EXTENDED_SESSIONSECURITY
            | NEGOTIATE_128
            | NEGOTIATE_56);

    let target_name = utf16le(TARGET_DOMAIN);
    let mut target_info = Vec::new();
    av_pair(
        &mut target_info,
        MSV_AV_NB_DOMAIN_NAME,
        &utf16le(TARGET_DOMAIN),
    );
    av_pair(
        &mut target_info,
        MSV_AV_NB_COMPUTER_NAME,
        &utf16le(TARGET_COMPUTER),
    );
    av_pair(
        &mut target_info,
        MSV_AV_DNS_DOMAIN_NAME,
        &utf16le("taskbridge.test"),
    );
    av_pair(
        &mut target_info,
        MSV_AV_DNS_COMPUTER_NAME,
        &utf16le("ews-sim.taskbridge.test"),
    );
    av_pair(&mut target_info, MSV_AV_TIMESTAMP, &timestamp.to_le_bytes());
    av_pair(&mut target_info, MSV_AV_EOL, &[]);

    // Fixed part: signature 8, type 4, target name fields 8, flags 4, challenge 8,
    // reserved 8, target info fields 8, version 8 = 56 bytes; the payload follows.
    const PAYLOAD: u32 = 56;
    let name_offset = PAYLOAD;
    let info_offset = PAYLOAD + target_name.len() as u32;

    let mut m = Vec::with_capacity(PAYLOAD as usize + target_name.len() + target_info.len());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&CHALLENGE.to_le_bytes());
    push_fields(&mut m, target_name.len(), name_offset);
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&challenge);
    m.extend_from_slice(&[0u8; 8]);
    push_fields(&mut m, target_info.len(), info_offset);
    // Version: 10.0 build 20348, NTLMSSP_REVISION_W2K3.
    m.extend_from_slice(&[10, 0]);
    m.extend_from_slice(&20348u16.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 15]);
    m.extend_from_slice(&target_name);
    m.extend_from_slice(&target_info);
    m
}

fn push_fields(m: &mut Vec<u8>, len: usize, offset: u32) {
    let len = len as u16;
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&offset.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate() -> Vec<u8> {
        ntlmclient::Message::Negotiate(ntlmclient::NegotiateMessage {
            flags: ntlmclient::Flags::NEGOTIATE_UNICODE
                | ntlmclient::Flags::REQUEST_TARGET
                | ntlmclient::Flags::NEGOTIATE_NTLM
                | ntlmclient::Flags::NEGOTIATE_WORKSTATION_SUPPLIED,
            supplied_domain: String::new(),
            supplied_workstation: "WS".into(),
            os_version: Default::default(),
        })
        .to_bytes()
        .expect("encode negotiate")
    }

    /// What the ntlmclient crate (the transport's client half) answers to `challenge`.
    fn authenticate(challenge: &[u8], user: &str, domain: &str, password: &str) -> Vec<u8> {
        let ntlmclient::Message::Challenge(c) =
            ntlmclient::Message::try_from(challenge).expect("client parses our challenge")
        else {
            panic!("not a challenge");
        };
        let info: Vec<u8> = c
            .target_information
            .iter()
            .flat_map(|e| e.to_bytes())
            .collect();
        let creds = ntlmclient::Credentials {
            username: user.into(),
            password: password.into(),
            domain: domain.into(),
        };
        let resp = ntlmclient::respond_challenge_ntlm_v2(
            c.challenge,
            &info,
            ntlmclient::get_ntlm_time(),
            &creds,
        );
        resp.to_message(
            &creds,
            "WS",
            ntlmclient::Flags::NEGOTIATE_UNICODE | ntlmclient::Flags::NEGOTIATE_NTLM,
        )
        .to_bytes()
        .expect("encode authenticate")
    }

    fn passwords(user: &str, domain: &str) -> Option<String> {
        match (user.to_ascii_lowercase().as_str(), domain) {
            ("svc-taskbridge", "CONTOSO") => Some("Corr3ct horse".into()),
            ("svc@contoso.com", "") => Some("upn-pass".into()),
            _ => None,
        }
    }

    #[test]
    fn ntlm_challenge_is_parsed_by_the_client_with_target_info() {
        let ch = challenge(&negotiate()).expect("challenge");
        let ntlmclient::Message::Challenge(c) =
            ntlmclient::Message::try_from(ch.message()).expect("parse")
        else {
            panic!("not a challenge");
        };
        assert_eq!(c.challenge, ch.server_challenge());
        assert_eq!(c.target_name, TARGET_DOMAIN);
        assert!(
            c.target_information
                .iter()
                .any(|e| e.entry_type == ntlmclient::TargetInfoType::Timestamp && e.data.len() == 8)
        );
        assert!(ch.www_authenticate().starts_with("NTLM TlRMTVNTUA"));
    }

    /// taskbridge's own AUTHENTICATE (bindings and MIC) answering `ch`.
    fn bound_authenticate(
        ch: &ServerChallenge,
        bindings: ChannelBindings,
        password: &str,
    ) -> Vec<u8> {
        let who = ntlm_message::Identity {
            user: "svc-taskbridge",
            domain: "CONTOSO",
            password,
            workstation: "WS",
            target_name: "HTTP/ews-sim",
        };
        ntlm_message::authenticate_message(&who, &ch.negotiate, ch.message(), bindings, [7; 8], 1)
            .expect("authenticate")
    }

    fn ours_challenge() -> ServerChallenge {
        challenge(&ntlm_message::negotiate_message()).expect("challenge")
    }

    #[test]
    fn extended_protection_checks_bindings_as_the_policy_says() {
        use ExtendedProtection::{Allow, None as Off, Require};
        let channel = ChannelBindings::tls_server_end_point(b"our certificate");
        let relayed = ChannelBindings::tls_server_end_point(b"a man in the middle's certificate");
        let cases = [
            // (policy, channel, what the client binds to, accepted)
            (Off, Some(channel), relayed, true),
            (Allow, Some(channel), channel, true),
            (Allow, Some(channel), ChannelBindings::NONE, true),
            (Allow, Some(channel), relayed, false),
            (Require, Some(channel), channel, true),
            (Require, Some(channel), ChannelBindings::NONE, false),
            (Require, Some(channel), relayed, false),
            // Plain HTTP: nothing to bind to.
            (Require, None, ChannelBindings::NONE, true),
        ];
        for (policy, on, sent, accepted) in cases {
            let ch = ours_challenge();
            let auth = bound_authenticate(&ch, sent, "Corr3ct horse");
            let result = verify_bound(&ch, &auth, passwords, policy, on);
            assert_eq!(
                result.is_ok(),
                accepted,
                "{policy:?} on {on:?}, client bound to {sent:?}: {result:?}"
            );
            if !accepted {
                assert!(matches!(result, Err(NtlmError::ChannelBindings(_))));
            }
        }
    }

    #[test]
    fn a_mic_that_does_not_match_the_handshake_is_refused() {
        let ch = ours_challenge();
        let mut auth = bound_authenticate(&ch, ChannelBindings::NONE, "Corr3ct horse");
        assert!(verify(&ch, &auth, passwords).is_ok());
        auth[ntlm_message::MIC_OFFSET] ^= 1;
        assert_eq!(verify(&ch, &auth, passwords), Err(NtlmError::BadMic));
        // The MIC covers the NEGOTIATE: a tampered NEGOTIATE (a downgrade) breaks it.
        let mut tampered = ours_challenge();
        let auth = bound_authenticate(&tampered, ChannelBindings::NONE, "Corr3ct horse");
        tampered.negotiate[12] ^= 0x01;
        assert_eq!(verify(&tampered, &auth, passwords), Err(NtlmError::BadMic));
        // A wrong password is still a wrong password, not a MIC failure.
        let ch = ours_challenge();
        let auth = bound_authenticate(&ch, ChannelBindings::NONE, "wrong");
        assert!(matches!(
            verify(&ch, &auth, passwords),
            Err(NtlmError::WrongPassword { .. })
        ));
    }

    #[test]
    fn rc4_gives_the_published_keystream() {
        // RFC 6229, key 0x0102030405: the first keystream bytes.
        let mut data = [0u8; 8];
        rc4(&[1, 2, 3, 4, 5], &mut data);
        assert_eq!(data, [0xb2, 0x39, 0x63, 0x05, 0xf0, 0x3d, 0xc0, 0x27]);
    }

    #[test]
    fn ntlm_challenges_are_random() {
        let a = challenge(&negotiate()).expect("a");
        let b = challenge(&negotiate()).expect("b");
        assert_ne!(a.server_challenge(), b.server_challenge());
    }

    #[test]
    fn ntlm_verify_right_password_accepts() {
        let ch = challenge(&negotiate()).expect("challenge");
        let auth = authenticate(ch.message(), "svc-taskbridge", "CONTOSO", "Corr3ct horse");
        let who = verify(&ch, &auth, passwords).expect("verified");
        assert_eq!(
            who,
            NtlmIdentity {
                user: "svc-taskbridge".into(),
                domain: "CONTOSO".into()
            }
        );
    }

    #[test]
    fn ntlm_verify_upn_form_accepts() {
        let ch = challenge(&negotiate()).expect("challenge");
        let auth = authenticate(ch.message(), "svc@contoso.com", "", "upn-pass");
        let who = verify(&ch, &auth, passwords).expect("verified");
        assert_eq!(who.user, "svc@contoso.com");
        assert_eq!(who.domain, "");
    }

    #[test]
    fn ntlm_verify_wrong_password_rejects() {
        let ch = challenge(&negotiate()).expect("challenge");
        let auth = authenticate(ch.message(), "svc-taskbridge", "CONTOSO", "wrong");
        assert!(matches!(
            verify(&ch, &auth, passwords),
            Err(NtlmError::WrongPassword { .. })
        ));
    }

    #[test]
    fn ntlm_verify_unknown_user_rejects() {
        let ch = challenge(&negotiate()).expect("challenge");
        let auth = authenticate(ch.message(), "mallory", "CONTOSO", "x");
        assert!(matches!(
            verify(&ch, &auth, passwords),
            Err(NtlmError::UnknownUser { .. })
        ));
    }

    #[test]
    fn ntlm_verify_answer_to_another_challenge_rejects() {
        let first = challenge(&negotiate()).expect("first");
        let second = challenge(&negotiate()).expect("second");
        let auth = authenticate(
            first.message(),
            "svc-taskbridge",
            "CONTOSO",
            "Corr3ct horse",
        );
        assert!(matches!(
            verify(&second, &auth, passwords),
            Err(NtlmError::WrongPassword { .. })
        ));
    }

    #[test]
    fn ntlm_verify_ntlmv1_response_is_unsupported() {
        let ch = challenge(&negotiate()).expect("challenge");
        // ntlmclient's own NTLMv1 routine panics (DES key length), so the message is built
        // directly: a 24-byte NT response is what NTLMv1 sends.
        let v1 = ntlmclient::Message::Authenticate(ntlmclient::AuthenticateMessage {
            lm_response: vec![0; 24],
            ntlm_response: vec![7; 24],
            domain_name: "CONTOSO".into(),
            user_name: "svc-taskbridge".into(),
            workstation_name: "WS".into(),
            session_key: Vec::new(),
            flags: ntlmclient::Flags::NEGOTIATE_UNICODE | ntlmclient::Flags::NEGOTIATE_NTLM,
            os_version: Default::default(),
        })
        .to_bytes()
        .expect("encode");
        assert_eq!(
            verify(&ch, &v1, passwords),
            Err(NtlmError::Unsupported("NTLMv1 response"))
        );
    }

    #[test]
    fn ntlm_garbage_and_truncated_input_is_an_error_not_a_panic() {
        assert!(challenge(b"").is_err());
        assert!(challenge(b"NTLMSSP\0\x03\0\0\0").is_err());
        let ch = challenge(&negotiate()).expect("challenge");
        let auth = authenticate(ch.message(), "svc-taskbridge", "CONTOSO", "Corr3ct horse");
        for len in 0..auth.len() {
            let _ = verify(&ch, &auth[..len], passwords);
        }
        let mut flipped = auth.clone();
        for i in 12..72.min(flipped.len()) {
            flipped[i] ^= 0xff;
            let _ = verify(&ch, &flipped, passwords);
            flipped[i] ^= 0xff;
        }
        assert!(verify(&ch, &negotiate(), passwords).is_err());
    }

    #[test]
    fn ntlm_decode_authorization_reads_ntlm_and_negotiate() {
        let neg = negotiate();
        let b64 = BASE64.encode(&neg);
        assert_eq!(
            decode_authorization(&format!("NTLM {b64}")),
            Some(neg.clone())
        );
        assert_eq!(decode_authorization(&format!("Negotiate {b64}")), Some(neg));
        assert_eq!(decode_authorization("Basic dXNlcjpwYXNz"), None);
        assert_eq!(decode_authorization("NTLM !!!"), None);
    }
}
