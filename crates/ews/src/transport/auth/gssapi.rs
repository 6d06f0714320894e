//! The system's GSSAPI (MIT Kerberos), loaded at run time, for Negotiate (SPNEGO) on both sides:
//! the client's initiator and the simulator's acceptor.
//!
//! Why loaded at run time (`dlopen` of `libgssapi_krb5.so.2`) rather than linked: linking needs
//! the library's development files (headers, the unversioned `.so`) at build time, and a plain
//! `cargo build` of this project must work on a machine with nothing but a Rust toolchain. Only
//! the handful of functions and structures Negotiate needs are declared here, from RFC 2744's C
//! bindings as MIT's `gssapi.h` lays them out on Linux (natural alignment, `OM_uint32` = `u32`).
//! Without the library, [`GssError::LibraryMissing`] says which file was looked for and which
//! package provides it.
//!
//! All the unsafe code of the crate's Kerberos support is in this module; every block says why
//! it is sound. Nothing here panics: every status is turned into a [`GssError`].
//!
//! Facts relied on (MIT krb5 documentation and RFC 2744):
//! - an initiator with `GSS_C_NO_CREDENTIAL` uses the default ticket cache (`KRB5CCNAME`) and,
//!   when that holds no ticket, obtains one from the client keytab (`KRB5_CLIENT_KTNAME`);
//! - `gss_acquire_cred_from` with the `keytab` key reads an acceptor's keys from that file
//!   instead of the process-wide default, so a server needs no environment variable;
//! - an acceptor given channel bindings refuses an initiator's different bindings with
//!   `GSS_S_BAD_BINDINGS`, accepts an initiator that sent none, and (MIT krb5 1.19 and later)
//!   sets `GSS_C_CHANNEL_BOUND_FLAG` in `ret_flags` only when the initiator's bindings matched.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The library file loaded.
pub const LIBRARY: &str = "libgssapi_krb5.so.2";

/// The Debian/Ubuntu package that provides [`LIBRARY`].
pub const PACKAGE: &str = "libgssapi-krb5-2";

/// `GSS_C_CHANNEL_BOUND_FLAG`: the acceptor saw matching channel bindings (MIT krb5 1.19+).
pub const CHANNEL_BOUND_FLAG: u32 = 0x800;

pub use crate::error::GssError;

// --- C declarations (RFC 2744 section 3, MIT's layout) ---------------------------------------

type OmUint32 = u32;
type GssName = *mut c_void;
type GssCtx = *mut c_void;
type GssCred = *mut c_void;

#[repr(C)]
struct OidDesc {
    length: OmUint32,
    elements: *mut c_void,
}

#[repr(C)]
struct OidSetDesc {
    count: usize,
    elements: *mut OidDesc,
}

#[repr(C)]
struct BufferDesc {
    length: usize,
    value: *mut c_void,
}

impl BufferDesc {
    const EMPTY: BufferDesc = BufferDesc {
        length: 0,
        value: std::ptr::null_mut(),
    };

    /// A descriptor of `bytes`, which the library only reads.
    fn of(bytes: &[u8]) -> BufferDesc {
        BufferDesc {
            length: bytes.len(),
            value: bytes.as_ptr() as *mut c_void,
        }
    }
}

#[repr(C)]
struct ChannelBindingsDesc {
    initiator_addrtype: OmUint32,
    initiator_address: BufferDesc,
    acceptor_addrtype: OmUint32,
    acceptor_address: BufferDesc,
    application_data: BufferDesc,
}

#[repr(C)]
struct KeyValueElement {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
struct KeyValueSet {
    count: OmUint32,
    elements: *const KeyValueElement,
}

/// An OID in a static, so that the library may keep the pointer.
struct StaticOid(OidDesc);
// SAFETY: the descriptor points at a static byte array and is never written, by us or (as
// RFC 2744 says of input OIDs) by the library.
unsafe impl Sync for StaticOid {}

static SPNEGO_BYTES: [u8; 6] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x02]; // 1.3.6.1.5.5.2
static HOSTBASED_BYTES: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04]; // 1.2.840.113554.1.2.1.4

static SPNEGO: StaticOid = StaticOid(OidDesc {
    length: 6,
    elements: SPNEGO_BYTES.as_ptr() as *mut c_void,
});
static NT_HOSTBASED_SERVICE: StaticOid = StaticOid(OidDesc {
    length: 10,
    elements: HOSTBASED_BYTES.as_ptr() as *mut c_void,
});

const GSS_S_CONTINUE_NEEDED: u32 = 1;
const GSS_C_GSS_CODE: c_int = 1;
const GSS_C_MECH_CODE: c_int = 2;
const GSS_C_ACCEPT: c_int = 2;
const GSS_C_MUTUAL_FLAG: u32 = 2;
const GSS_C_SEQUENCE_FLAG: u32 = 8;

fn is_error(major: u32) -> bool {
    major & 0xffff_0000 != 0
}

type ImportName =
    unsafe extern "C" fn(*mut OmUint32, *const BufferDesc, *const OidDesc, *mut GssName) -> u32;
type InitSecContext = unsafe extern "C" fn(
    *mut OmUint32,
    GssCred,
    *mut GssCtx,
    GssName,
    *const OidDesc,
    OmUint32,
    OmUint32,
    *const ChannelBindingsDesc,
    *const BufferDesc,
    *mut *mut OidDesc,
    *mut BufferDesc,
    *mut OmUint32,
    *mut OmUint32,
) -> u32;
type AcceptSecContext = unsafe extern "C" fn(
    *mut OmUint32,
    *mut GssCtx,
    GssCred,
    *const BufferDesc,
    *const ChannelBindingsDesc,
    *mut GssName,
    *mut *mut OidDesc,
    *mut BufferDesc,
    *mut OmUint32,
    *mut OmUint32,
    *mut GssCred,
) -> u32;
type AcquireCredFrom = unsafe extern "C" fn(
    *mut OmUint32,
    GssName,
    OmUint32,
    *const OidSetDesc,
    c_int,
    *const KeyValueSet,
    *mut GssCred,
    *mut *mut OidSetDesc,
    *mut OmUint32,
) -> u32;
type DisplayName =
    unsafe extern "C" fn(*mut OmUint32, GssName, *mut BufferDesc, *mut *mut OidDesc) -> u32;
type DisplayStatus = unsafe extern "C" fn(
    *mut OmUint32,
    OmUint32,
    c_int,
    *const OidDesc,
    *mut OmUint32,
    *mut BufferDesc,
) -> u32;
type ReleaseBuffer = unsafe extern "C" fn(*mut OmUint32, *mut BufferDesc) -> u32;
type ReleaseName = unsafe extern "C" fn(*mut OmUint32, *mut GssName) -> u32;
type ReleaseCred = unsafe extern "C" fn(*mut OmUint32, *mut GssCred) -> u32;
type DeleteSecContext = unsafe extern "C" fn(*mut OmUint32, *mut GssCtx, *mut BufferDesc) -> u32;

/// The loaded library's functions.
struct Library {
    import_name: ImportName,
    init_sec_context: InitSecContext,
    accept_sec_context: AcceptSecContext,
    acquire_cred_from: AcquireCredFrom,
    display_name: DisplayName,
    display_status: DisplayStatus,
    release_buffer: ReleaseBuffer,
    release_name: ReleaseName,
    release_cred: ReleaseCred,
    delete_sec_context: DeleteSecContext,
}

/// The last `dlerror()` text.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by the loader, valid until
    // the next dl call on this thread; it is copied at once.
    unsafe {
        let text = libc::dlerror();
        if text.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        }
    }
}

impl Library {
    fn load() -> Result<Library, GssError> {
        let name = CString::new(LIBRARY).map_err(|e| GssError::Input(e.to_string()))?;
        // SAFETY: `name` is a valid C string; the handle is never closed, so the function
        // pointers read from it stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(GssError::LibraryMissing { detail: dl_error() });
        }
        let symbol = |name: &'static str| -> Result<*mut c_void, GssError> {
            let c = CString::new(name).map_err(|e| GssError::Input(e.to_string()))?;
            // SAFETY: `handle` is a live handle from dlopen and `c` a valid C string.
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                Err(GssError::LibraryMissing {
                    detail: format!("{name} not found: {}", dl_error()),
                })
            } else {
                Ok(p)
            }
        };
        // SAFETY: each symbol is the function of that name in MIT's libgssapi_krb5, whose C
        // signature (RFC 2744; gss_acquire_cred_from from MIT's gssapi_ext.h) the type it is
        // transmuted to declares; function and data pointers have the same size on the
        // platforms this library exists for.
        unsafe {
            Ok(Library {
                import_name: std::mem::transmute::<*mut c_void, ImportName>(symbol(
                    "gss_import_name",
                )?),
                init_sec_context: std::mem::transmute::<*mut c_void, InitSecContext>(symbol(
                    "gss_init_sec_context",
                )?),
                accept_sec_context: std::mem::transmute::<*mut c_void, AcceptSecContext>(symbol(
                    "gss_accept_sec_context",
                )?),
                acquire_cred_from: std::mem::transmute::<*mut c_void, AcquireCredFrom>(symbol(
                    "gss_acquire_cred_from",
                )?),
                display_name: std::mem::transmute::<*mut c_void, DisplayName>(symbol(
                    "gss_display_name",
                )?),
                display_status: std::mem::transmute::<*mut c_void, DisplayStatus>(symbol(
                    "gss_display_status",
                )?),
                release_buffer: std::mem::transmute::<*mut c_void, ReleaseBuffer>(symbol(
                    "gss_release_buffer",
                )?),
                release_name: std::mem::transmute::<*mut c_void, ReleaseName>(symbol(
                    "gss_release_name",
                )?),
                release_cred: std::mem::transmute::<*mut c_void, ReleaseCred>(symbol(
                    "gss_release_cred",
                )?),
                delete_sec_context: std::mem::transmute::<*mut c_void, DeleteSecContext>(symbol(
                    "gss_delete_sec_context",
                )?),
            })
        }
    }

    /// Copies a library-owned buffer out and releases it.
    fn take_buffer(&self, buffer: &mut BufferDesc) -> Vec<u8> {
        let bytes = if buffer.value.is_null() || buffer.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library filled `buffer` with `length` readable bytes at `value`.
            unsafe { std::slice::from_raw_parts(buffer.value as *const u8, buffer.length) }.to_vec()
        };
        let mut minor = 0;
        // SAFETY: `buffer` was filled by the library (or is empty), and is released once.
        unsafe { (self.release_buffer)(&mut minor, buffer) };
        bytes
    }

    /// The library's messages for a status pair.
    fn describe(&self, major: u32, minor: u32) -> String {
        let mut parts = Vec::new();
        for (code, kind) in [(major, GSS_C_GSS_CODE), (minor, GSS_C_MECH_CODE)] {
            if code == 0 {
                continue;
            }
            let mut context: OmUint32 = 0;
            // The library hands out one message per call; a handful is all there ever is.
            for _ in 0..8 {
                let mut out_minor = 0;
                let mut buffer = BufferDesc::EMPTY;
                // SAFETY: valid out-pointers; a null mech OID means the default mechanism.
                let status = unsafe {
                    (self.display_status)(
                        &mut out_minor,
                        code,
                        kind,
                        std::ptr::null(),
                        &mut context,
                        &mut buffer,
                    )
                };
                if is_error(status) {
                    break;
                }
                let text = String::from_utf8_lossy(&self.take_buffer(&mut buffer)).into_owned();
                if !text.is_empty() && !parts.contains(&text) {
                    parts.push(text);
                }
                if context == 0 {
                    break;
                }
            }
        }
        if parts.is_empty() {
            format!("major status {major:#x}, minor status {minor}")
        } else {
            parts.join(": ")
        }
    }

    fn error(&self, call: &'static str, major: u32, minor: u32) -> GssError {
        GssError::Call {
            call,
            major,
            minor,
            message: self.describe(major, minor),
        }
    }

    fn release_name(&self, name: &mut GssName) {
        if !name.is_null() {
            let mut minor = 0;
            // SAFETY: `name` came from the library and is released once (it is nulled).
            unsafe { (self.release_name)(&mut minor, name) };
            *name = std::ptr::null_mut();
        }
    }
}

static LOADED: OnceLock<Result<Library, GssError>> = OnceLock::new();

fn library() -> Result<&'static Library, GssError> {
    LOADED
        .get_or_init(Library::load)
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether the GSSAPI library loads on this machine (the error says why not).
pub fn available() -> Result<(), GssError> {
    library().map(|_| ())
}

/// TLS channel bindings as the library takes them: no addresses, `application_data` as given.
fn bindings_desc(application_data: &[u8]) -> ChannelBindingsDesc {
    ChannelBindingsDesc {
        initiator_addrtype: 0,
        initiator_address: BufferDesc::EMPTY,
        acceptor_addrtype: 0,
        acceptor_address: BufferDesc::EMPTY,
        application_data: BufferDesc::of(application_data),
    }
}

/// One step of a context: the token to send (may be empty) and whether the context is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The token for the peer; empty when there is nothing to send.
    pub token: Vec<u8>,
    /// Whether the context is established.
    pub complete: bool,
}

/// A SPNEGO initiator context for one service, with the caller's default credentials (ticket
/// cache `KRB5CCNAME`, else client keytab `KRB5_CLIENT_KTNAME`), asking for mutual
/// authentication.
pub struct Initiator {
    lib: &'static Library,
    target: GssName,
    ctx: GssCtx,
    application_data: Option<Vec<u8>>,
    complete: bool,
}

// SAFETY: the context and name are used by one thread at a time (every method takes `&mut self`
// or `self`), and MIT's GSSAPI keeps no thread-local state tied to a context.
unsafe impl Send for Initiator {}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("bound", &self.application_data.is_some())
            .field("complete", &self.complete)
            .finish()
    }
}

impl Initiator {
    /// A context for `service` in GSSAPI's host-based form (`HTTP@mail.contoso.com`), bound to
    /// the channel by `application_data` (`tls-server-end-point:` + certificate hash) when given.
    pub fn new(service: &str, application_data: Option<Vec<u8>>) -> Result<Initiator, GssError> {
        let lib = library()?;
        let name = service.as_bytes();
        if name.contains(&0) {
            return Err(GssError::Input("the service name holds a NUL byte".into()));
        }
        let mut target: GssName = std::ptr::null_mut();
        let mut minor = 0;
        let buffer = BufferDesc::of(name);
        // SAFETY: `buffer` describes `name`, alive for the call; the OID is static; `target` is
        // a valid out-pointer.
        let major =
            unsafe { (lib.import_name)(&mut minor, &buffer, &NT_HOSTBASED_SERVICE.0, &mut target) };
        if is_error(major) {
            return Err(lib.error("gss_import_name", major, minor));
        }
        Ok(Initiator {
            lib,
            target,
            ctx: std::ptr::null_mut(),
            application_data,
            complete: false,
        })
    }

    /// Whether the context is established (the server's last token, if any, was accepted).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Runs `gss_init_sec_context` once, with the peer's `input` token (none at first).
    /// May contact the KDC: call it where blocking is allowed.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Step, GssError> {
        let lib = self.lib;
        let bindings = self.application_data.as_deref().map(bindings_desc);
        let input_desc = input.map(BufferDesc::of);
        let mut output = BufferDesc::EMPTY;
        let mut minor = 0;
        let mut ret_flags = 0;
        // SAFETY: `self.ctx` is null or a context of this library; `self.target` a live name;
        // the bindings and input descriptors point at memory alive for the call; the other
        // out-pointers are valid, and the null ones are documented as "not wanted".
        let major = unsafe {
            (lib.init_sec_context)(
                &mut minor,
                std::ptr::null_mut(),
                &mut self.ctx,
                self.target,
                &SPNEGO.0,
                GSS_C_MUTUAL_FLAG | GSS_C_SEQUENCE_FLAG,
                0,
                bindings
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b as *const ChannelBindingsDesc),
                input_desc
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b as *const BufferDesc),
                std::ptr::null_mut(),
                &mut output,
                &mut ret_flags,
                std::ptr::null_mut(),
            )
        };
        let token = lib.take_buffer(&mut output);
        if is_error(major) {
            return Err(lib.error("gss_init_sec_context", major, minor));
        }
        // Other supplementary bits (an old or duplicate token) do not leave the context open.
        self.complete = major & GSS_S_CONTINUE_NEEDED == 0;
        Ok(Step {
            token,
            complete: self.complete,
        })
    }
}

impl Drop for Initiator {
    fn drop(&mut self) {
        let mut minor = 0;
        if !self.ctx.is_null() {
            // SAFETY: a context of this library, deleted once; no output token wanted.
            unsafe {
                (self.lib.delete_sec_context)(&mut minor, &mut self.ctx, std::ptr::null_mut())
            };
        }
        self.lib.release_name(&mut self.target);
    }
}

/// An acceptor's credentials: the keys of a keytab file.
pub struct AcceptorCredential {
    lib: &'static Library,
    cred: GssCred,
}

// SAFETY: a credential handle is only read by gss_accept_sec_context, which MIT allows from
// several threads at once; it is released once, on drop.
unsafe impl Send for AcceptorCredential {}
// SAFETY: as above: shared use is read-only.
unsafe impl Sync for AcceptorCredential {}

impl std::fmt::Debug for AcceptorCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptorCredential")
    }
}

/// What an acceptor learnt from an initiator's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The token to send back (the mutual-authentication answer, or the next leg).
    pub token: Vec<u8>,
    /// Whether the context is established; when not, `token` asks for another leg.
    pub complete: bool,
    /// The initiator's principal (`user@REALM`) once complete.
    pub client: String,
    /// Whether the initiator's channel bindings matched (`GSS_C_CHANNEL_BOUND_FLAG`).
    pub channel_bound: bool,
}

impl AcceptorCredential {
    /// Reads the acceptor keys of `keytab` (any service principal in it).
    pub fn from_keytab(keytab: &std::path::Path) -> Result<AcceptorCredential, GssError> {
        let lib = library()?;
        let path = CString::new(keytab.as_os_str().as_encoded_bytes())
            .map_err(|_| GssError::Input("the keytab path holds a NUL byte".into()))?;
        let key = c"keytab";
        let element = KeyValueElement {
            key: key.as_ptr(),
            value: path.as_ptr(),
        };
        let store = KeyValueSet {
            count: 1,
            elements: &element,
        };
        let mut cred: GssCred = std::ptr::null_mut();
        let mut minor = 0;
        // SAFETY: the store and its strings are alive for the call; a null name and mech set
        // mean "any"; `cred` is a valid out-pointer; unwanted outputs are null.
        let major = unsafe {
            (lib.acquire_cred_from)(
                &mut minor,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
                GSS_C_ACCEPT,
                &store,
                &mut cred,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if is_error(major) {
            return Err(lib.error("gss_acquire_cred_from", major, minor));
        }
        Ok(AcceptorCredential { lib, cred })
    }

    /// Starts an acceptor context with these keys, expecting the channel bindings
    /// `application_data` (none over plain HTTP).
    pub fn acceptor(self: &std::sync::Arc<Self>, application_data: Option<Vec<u8>>) -> Acceptor {
        Acceptor {
            cred: self.clone(),
            ctx: std::ptr::null_mut(),
            application_data,
        }
    }
}

impl Drop for AcceptorCredential {
    fn drop(&mut self) {
        let mut minor = 0;
        if !self.cred.is_null() {
            // SAFETY: a credential of this library, released once.
            unsafe { (self.lib.release_cred)(&mut minor, &mut self.cred) };
        }
    }
}

/// One acceptor context (one client's handshake).
pub struct Acceptor {
    cred: std::sync::Arc<AcceptorCredential>,
    ctx: GssCtx,
    application_data: Option<Vec<u8>>,
}

// SAFETY: used by one thread at a time (`&mut self`); see `Initiator`.
unsafe impl Send for Acceptor {}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// Runs `gss_accept_sec_context` on the initiator's `token`.
    pub fn step(&mut self, token: &[u8]) -> Result<Accepted, GssError> {
        let lib = self.cred.lib;
        let bindings = self.application_data.as_deref().map(bindings_desc);
        let input = BufferDesc::of(token);
        let mut output = BufferDesc::EMPTY;
        let mut source: GssName = std::ptr::null_mut();
        let mut ret_flags = 0;
        let mut minor = 0;
        // SAFETY: `self.ctx` is null or a context of this library; the credential is live;
        // input and bindings point at memory alive for the call; out-pointers are valid and
        // the null ones are "not wanted".
        let major = unsafe {
            (lib.accept_sec_context)(
                &mut minor,
                &mut self.ctx,
                self.cred.cred,
                &input,
                bindings
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b as *const ChannelBindingsDesc),
                &mut source,
                std::ptr::null_mut(),
                &mut output,
                &mut ret_flags,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let out = lib.take_buffer(&mut output);
        if is_error(major) {
            lib.release_name(&mut source);
            return Err(lib.error("gss_accept_sec_context", major, minor));
        }
        let complete = major & GSS_S_CONTINUE_NEEDED == 0;
        let mut client = String::new();
        if complete && !source.is_null() {
            let mut buffer = BufferDesc::EMPTY;
            let mut minor = 0;
            // SAFETY: `source` is the live name the library just returned; the buffer is an
            // out-pointer released by take_buffer.
            let major = unsafe {
                (lib.display_name)(&mut minor, source, &mut buffer, std::ptr::null_mut())
            };
            if !is_error(major) {
                client = String::from_utf8_lossy(&lib.take_buffer(&mut buffer)).into_owned();
            }
        }
        lib.release_name(&mut source);
        Ok(Accepted {
            token: out,
            complete,
            client,
            channel_bound: ret_flags & CHANNEL_BOUND_FLAG != 0,
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        let mut minor = 0;
        if !self.ctx.is_null() {
            // SAFETY: a context of this library, deleted once; no output token wanted.
            unsafe {
                (self.cred.lib.delete_sec_context)(&mut minor, &mut self.ctx, std::ptr::null_mut())
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_the_spnego_and_host_based_service_ones() {
        // 1.3.6.1.5.5.2: first two arcs as 40 * 1 + 3 = 43 = 0x2b.
        assert_eq!(SPNEGO_BYTES, [43, 6, 1, 5, 5, 2]);
        assert_eq!(SPNEGO.0.length as usize, SPNEGO_BYTES.len());
        assert_eq!(
            NT_HOSTBASED_SERVICE.0.length as usize,
            HOSTBASED_BYTES.len()
        );
    }

    #[test]
    fn bad_bindings_is_recognised_by_its_routine_error() {
        let e = GssError::Call {
            call: "gss_accept_sec_context",
            major: 4 << 16, // GSS_S_BAD_BINDINGS
            minor: 0,
            message: String::new(),
        };
        assert!(e.is_bad_bindings());
        let e = GssError::Call {
            call: "gss_accept_sec_context",
            major: 13 << 16,
            minor: 0,
            message: String::new(),
        };
        assert!(!e.is_bad_bindings());
    }

    #[test]
    fn a_name_with_a_nul_byte_is_refused_without_reaching_the_library() {
        match Initiator::new("HTTP@a\0b", None) {
            Err(GssError::Input(_)) | Err(GssError::LibraryMissing { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
