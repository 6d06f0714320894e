//! One handler per EWS operation, dispatched by the name of the body element.
//!
//! Each handler reads its request strictly (known elements out of schema order are an
//! ErrorSchemaValidation fault, as on Exchange), checks the schema facets Exchange's validator
//! would (ranges, enumerations), then answers per item: one bad id never fails the batch. An
//! operation the simulator does not implement gets a SOAP fault and the connection stays open.

mod create_item;
mod delete_item;
mod find_item;
mod get_events;
mod get_folder;
mod get_item;
mod subscribe;
mod sync_folder_items;
mod unsubscribe;
mod update_item;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::auth::Caller;
use crate::fields::ItemError;
use crate::ids::{self, FolderKind};
use crate::shared::Sim;
use crate::store::{Mailbox, MailboxState};
use taskbridge_ews::error::DecodeError;
use taskbridge_ews::generated::OperationInfo;
use taskbridge_ews::ops as wire;
use taskbridge_ews::ops::{Operation, OperationResponse, decode_request_strict, encode_response};
use taskbridge_ews::soap::{self, Fault, Header};
use taskbridge_ews::types::{
    BaseFolderId, DistinguishedFolderName, ItemId, MessageXml, ResponseClass, ResponseCode,
    ResponseMessage,
};

/// What a dispatched request answers.
pub(crate) struct Dispatched {
    /// The response envelope (HTTP 200) unless `fault` is set.
    pub body: Vec<u8>,
    /// A SOAP fault (HTTP 500).
    pub fault: Option<Fault>,
    /// Persistence acknowledgements to wait for before answering.
    pub acks: Vec<oneshot::Receiver<Result<(), String>>>,
}

impl Dispatched {
    pub(crate) fn fault(fault: Fault) -> Self {
        Dispatched {
            body: Vec::new(),
            fault: Some(fault),
            acks: Vec::new(),
        }
    }
}

/// Reads the SOAP headers and the name of the body element, without decoding the body.
pub(crate) fn peek(body: &[u8], max: usize) -> Result<(Header, String), Box<Fault>> {
    let mut name = String::new();
    let env = soap::read_envelope(body, max, |r, e| {
        name = if e.ns() == taskbridge_ews::xml::Ns::Messages {
            e.name_lossy()
        } else {
            format!("{{other}}{}", e.name_lossy())
        };
        r.skip(e)
    })
    .map_err(|e| Box::new(schema_fault(&e)))?;
    Ok((env.header, name))
}

/// The ErrorSchemaValidation fault for a request that does not read.
pub(crate) fn schema_fault(e: &DecodeError) -> Fault {
    let (line, pos) = match e {
        DecodeError::Malformed { line, column, .. }
        | DecodeError::OutOfOrder { line, column, .. }
        | DecodeError::Truncated { line, column } => (*line, *column),
        _ => (1, 1),
    };
    Fault::schema_validation(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(pos).unwrap_or(u32::MAX),
        &e.to_string(),
    )
}

fn schema_violation(what: String) -> Fault {
    Fault::schema_validation(1, 1, &what)
}

/// The mailbox a request works on, for the per-mailbox concurrency limit: the impersonated
/// one, else `X-AnchorMailbox`, else the caller's own.
pub(crate) fn anchor_mailbox(
    sim: &Sim,
    caller: &Caller,
    header: &Header,
    anchor: Option<&str>,
) -> Option<Arc<Mailbox>> {
    let name = header
        .impersonation
        .as_ref()
        .map(|i| i.value().to_string())
        .or_else(|| anchor.map(str::to_string))
        .or_else(|| caller.user.clone())?;
    sim.store.by_smtp(&name).cloned()
}

/// Hands a mailbox's pending writes to the state file; the receiver resolves once they are
/// committed. Called with the mailbox locked, so writes reach the file in change order.
pub(crate) fn commit(
    sim: &Sim,
    mb: &Mailbox,
    st: &mut MailboxState,
) -> Option<oneshot::Receiver<Result<(), String>>> {
    match &sim.persist {
        Some(p) => p.submit(mb, st),
        None => {
            st.dirty = Default::default();
            None
        }
    }
}

/// What a handler sees of the request.
pub(crate) struct Ctx<'a> {
    pub sim: &'a Sim,
    pub caller: &'a Caller,
    /// The impersonated mailbox, or the caller's own.
    pub acting: Option<Arc<Mailbox>>,
    /// Whether `acting` comes from ExchangeImpersonation.
    pub impersonating: bool,
    /// Where the request was routed.
    pub route: Route,
    pub now: DateTime<Utc>,
    pub acks: Vec<oneshot::Receiver<Result<(), String>>>,
}

fn err(code: ResponseCode, text: &str) -> ItemError {
    (code, text.to_string())
}

fn other(code: &str, text: &str) -> ItemError {
    (ResponseCode::Other(code.to_string()), text.to_string())
}

impl Ctx<'_> {
    /// Commits a mailbox's pending writes (see [`commit`]).
    pub fn commit(&mut self, mb: &Mailbox, st: &mut MailboxState) {
        if let Some(ack) = commit(self.sim, mb, st) {
            self.acks.push(ack);
        }
    }

    /// Whether the request may touch `mb`.
    pub fn check_access(&self, mb: &Mailbox) -> Result<(), ItemError> {
        let allowed = match &self.acting {
            Some(acting) if self.impersonating => acting.no == mb.no,
            Some(acting) => acting.no == mb.no || self.caller.unrestricted,
            None => self.caller.unrestricted,
        };
        if allowed {
            Ok(())
        } else {
            Err(err(
                ResponseCode::ErrorAccessDenied,
                "Access is denied. Check credentials and try again.",
            ))
        }
    }

    /// The mailbox and folder a folder id names, access checked.
    pub fn resolve_folder(
        &self,
        id: &BaseFolderId,
    ) -> Result<(Arc<Mailbox>, FolderKind), ItemError> {
        let (mb, folder) = match id {
            BaseFolderId::FolderId(f) => {
                let (no, folder) = ids::parse_folder_id(f.id.as_str()).ok_or_else(|| {
                    err(ResponseCode::ErrorInvalidIdMalformed, "Id is malformed.")
                })?;
                let mb = self
                    .sim
                    .store
                    .by_no(no)
                    .cloned()
                    .ok_or_else(folder_not_found)?;
                (mb, folder)
            }
            BaseFolderId::DistinguishedFolderId(d) => {
                let folder = match &d.id {
                    DistinguishedFolderName::Tasks => FolderKind::Tasks,
                    DistinguishedFolderName::Inbox => FolderKind::Inbox,
                    DistinguishedFolderName::MsgFolderRoot => FolderKind::Root,
                    DistinguishedFolderName::DeletedItems => FolderKind::DeletedItems,
                    // The mailbox root and the top of the message folders are one folder here.
                    DistinguishedFolderName::Other(name) if name == "root" => FolderKind::Root,
                    _ => return Err(folder_not_found()),
                };
                let address = d.mailbox.as_ref().and_then(|m| m.email_address.as_deref());
                let mb = match address {
                    Some(a) => self.sim.store.by_smtp(a).cloned().ok_or_else(|| {
                        err(
                            ResponseCode::ErrorNonExistentMailbox,
                            "The SMTP address has no mailbox associated with it.",
                        )
                    })?,
                    None => self.acting.clone().ok_or_else(|| {
                        other(
                            "ErrorMissingEmailAddress",
                            "When making a request as an account that does not have a mailbox, you must specify the mailbox primary SMTP address for any distinguished folders.",
                        )
                    })?,
                };
                (mb, folder)
            }
        };
        self.check_access(&mb)?;
        Ok((mb, folder))
    }

    /// The mailbox and item number an item id names, access checked.
    pub fn resolve_item(&self, id: &ItemId) -> Result<(Arc<Mailbox>, u64), ItemError> {
        let (no, item) = ids::parse_item_id(id.id.as_str())
            .ok_or_else(|| err(ResponseCode::ErrorInvalidIdMalformed, "Id is malformed."))?;
        let mb = self.sim.store.by_no(no).cloned().ok_or_else(|| {
            err(
                ResponseCode::ErrorItemNotFound,
                "The specified object was not found in the store.",
            )
        })?;
        self.check_access(&mb)?;
        Ok((mb, item))
    }

    /// The name written in LastModifiedName.
    pub fn modifier(&self) -> String {
        match &self.acting {
            Some(mb) => mb.display_name.clone(),
            None => self.caller.name().to_string(),
        }
    }
}

fn folder_not_found() -> ItemError {
    err(
        ResponseCode::ErrorFolderNotFound,
        "The specified folder could not be found in the store.",
    )
}

/// A failed message with the payload the operation writes on errors.
pub(crate) fn error_message<P>(e: ItemError, payload: P) -> ResponseMessage<P> {
    ResponseMessage::error(e.0, e.1, payload)
}

/// What the simulator needs of each operation beyond [`Operation`].
pub(crate) trait SimOp: Operation + Sized {
    /// How many response messages the request asks for.
    fn count(&self) -> usize;
    /// The payload of an error message (the elements the schema requires, empty).
    fn error_payload() -> <Self::Response as OperationResponse>::Payload;
    /// Schema facets Exchange's validator checks and our reader does not.
    fn check_schema(&self) -> Result<(), String> {
        Ok(())
    }
    /// Handles the request.
    fn handle(self, ctx: &mut Ctx<'_>) -> Result<Self::Response, Box<Fault>>;
}

/// Where a request was routed, as a Client Access server routes it: the backend (by the
/// `X-BackEndOverrideCookie`, else the `X-AnchorMailbox`, else the mailbox acted for) and the
/// `X-AnchorMailbox` it carried.
#[derive(Clone, Debug, Default)]
pub(crate) struct Route {
    /// The backend reached; `None` when no mailbox tells.
    pub backend: Option<usize>,
    /// The `X-AnchorMailbox` header.
    pub anchor: Option<String>,
}

/// Decodes and handles a request of operation `name`.
pub(crate) fn dispatch(
    sim: &Sim,
    caller: &Caller,
    header: Header,
    name: &str,
    body: &[u8],
    busy: Option<Duration>,
    route: &Route,
) -> Dispatched {
    let request = Request {
        sim,
        caller,
        header: &header,
        body,
        busy,
        route,
    };
    // The operation names are the generated list's (wsdl/services.wsdl): an operation added
    // there and not handled here is answered as declared but not handled.
    let result = taskbridge_ews::generated::visit_operation(name, request);
    match result {
        Ok((body, acks)) => Dispatched {
            body,
            fault: None,
            acks,
        },
        Err(fault) => Dispatched::fault(*fault),
    }
}

/// One request on its way to its operation's handler.
struct Request<'a> {
    sim: &'a Sim,
    caller: &'a Caller,
    header: &'a Header,
    body: &'a [u8],
    busy: Option<Duration>,
    route: &'a Route,
}

impl Request<'_> {
    fn run<O: SimOp>(self) -> Result<Done, Box<Fault>> {
        run::<O>(
            self.sim,
            self.caller,
            self.header,
            self.body,
            self.busy,
            self.route,
        )
    }
}

/// The operations the simulator serves; GetStreamingEvents is answered by the HTTP layer,
/// which streams (`crate::streaming`).
impl taskbridge_ews::generated::OperationVisitor for Request<'_> {
    type Output = Result<Done, Box<Fault>>;

    fn unhandled(self, operation: &'static OperationInfo) -> Self::Output {
        Err(Box::new(unknown_operation(operation.name)))
    }
    fn unknown(self, name: &str) -> Self::Output {
        Err(Box::new(unknown_operation(name)))
    }
    fn create_item(self) -> Self::Output {
        self.run::<wire::create_item::CreateItem>()
    }
    fn delete_item(self) -> Self::Output {
        self.run::<wire::delete_item::DeleteItem>()
    }
    fn find_item(self) -> Self::Output {
        self.run::<wire::find_item::FindItem>()
    }
    fn get_events(self) -> Self::Output {
        self.run::<wire::get_events::GetEvents>()
    }
    fn get_folder(self) -> Self::Output {
        self.run::<wire::get_folder::GetFolder>()
    }
    fn get_item(self) -> Self::Output {
        self.run::<wire::get_item::GetItem>()
    }
    fn subscribe(self) -> Self::Output {
        self.run::<wire::subscribe::Subscribe>()
    }
    fn sync_folder_items(self) -> Self::Output {
        self.run::<wire::sync_folder_items::SyncFolderItems>()
    }
    fn unsubscribe(self) -> Self::Output {
        self.run::<wire::unsubscribe::Unsubscribe>()
    }
    fn update_item(self) -> Self::Output {
        self.run::<wire::update_item::UpdateItem>()
    }
}

fn unknown_operation(name: &str) -> Fault {
    let known = taskbridge_ews::generated::OPERATIONS
        .iter()
        .any(|o| o.name == name);
    if let Some(local) = name.strip_prefix("{other}") {
        return Fault::schema_validation(
            1,
            1,
            &format!("The element 'Body' has invalid child element '{local}'."),
        );
    }
    let message = if known {
        format!("The operation {name} is declared but not handled by the taskbridge simulator.")
    } else {
        format!("The taskbridge simulator does not implement the operation {name}.")
    };
    Fault::client(ResponseCode::ErrorInvalidRequest, &message)
}

type Done = (Vec<u8>, Vec<oneshot::Receiver<Result<(), String>>>);

fn run<O: SimOp>(
    sim: &Sim,
    caller: &Caller,
    header: &Header,
    body: &[u8],
    busy: Option<Duration>,
    route: &Route,
) -> Result<Done, Box<Fault>> {
    let (_, request) = decode_request_strict::<O>(body, sim.config.max_request_bytes)
        .map_err(|e| schema_fault(&e))?;
    request
        .check_schema()
        .map_err(|v| Box::new(schema_violation(v)))?;
    let (acting, impersonating) = acting_mailbox(sim, caller, header)?;
    let response = match busy {
        Some(back_off) => {
            let messages = (0..request.count().max(1))
                .map(|_| ResponseMessage {
                    response_class: ResponseClass::Error,
                    message_text: Some(
                        "The server cannot service this request right now. Try again later.".into(),
                    ),
                    response_code: Some(ResponseCode::ErrorServerBusy),
                    message_xml: Some(MessageXml::with_back_off(back_off)),
                    payload: O::error_payload(),
                })
                .collect();
            <O::Response as OperationResponse>::from_messages(messages)
        }
        None => {
            let mut ctx = Ctx {
                sim,
                caller,
                acting,
                impersonating,
                route: route.clone(),
                now: Utc::now(),
                acks: Vec::new(),
            };
            let response = request.handle(&mut ctx)?;
            return Ok((
                encode_response::<O>(Some(&sim.config.server_version), &response),
                ctx.acks,
            ));
        }
    };
    Ok((
        encode_response::<O>(Some(&sim.config.server_version), &response),
        Vec::new(),
    ))
}

/// Resolves ExchangeImpersonation: the mailbox the request acts as.
pub(crate) fn acting_mailbox(
    sim: &Sim,
    caller: &Caller,
    header: &Header,
) -> Result<(Option<Arc<Mailbox>>, bool), Box<Fault>> {
    match &header.impersonation {
        Some(who) => {
            if !caller.may_impersonate {
                return Err(Box::new(Fault::client(
                    ResponseCode::Other("ErrorImpersonateUserDenied".into()),
                    "The account does not have permission to impersonate the requested user.",
                )));
            }
            let mb = sim.store.by_smtp(who.value()).cloned().ok_or_else(|| {
                Box::new(Fault::client(
                    ResponseCode::ErrorNonExistentMailbox,
                    &format!(
                        "The SMTP address has no mailbox associated with it. ({})",
                        who.value()
                    ),
                ))
            })?;
            Ok((Some(mb), true))
        }
        None => Ok((
            caller
                .user
                .as_deref()
                .and_then(|u| sim.store.by_smtp(u))
                .cloned(),
            false,
        )),
    }
}

/// The per-item answer of a write to a mailbox over its quota.
pub(crate) fn quota_exceeded() -> crate::fields::ItemError {
    (
        ResponseCode::Other("ErrorQuotaExceeded".into()),
        "The operation failed because it exceeds the mailbox quota.".into(),
    )
}
