//! The simulator's opaque tokens: item, folder and subscription ids, change keys, watermarks
//! and sync states.
//!
//! Exchange's tokens are base64 blobs the client must not interpret; ours are too, but they
//! encode what the simulator needs to find things without a global index: an item id names its
//! mailbox, a change key the change number it was issued at. They use the URL-safe base64
//! alphabet so that the admin API can put them in paths.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use taskbridge_ews::types::{ChangeKey, FolderIdValue, ItemIdValue, SyncState, Watermark};

/// The folders every simulated mailbox has.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum FolderKind {
    /// The root of the message folder hierarchy (`msgfolderroot`).
    Root,
    /// The Tasks folder (`tasks`), where task items go by default.
    Tasks,
    /// The Inbox (`inbox`); empty unless a client puts something there.
    Inbox,
    /// Deleted Items (`deleteditems`), where `MoveToDeletedItems` puts items.
    DeletedItems,
}

impl FolderKind {
    /// All folders, in id order.
    pub const ALL: [FolderKind; 4] = [
        FolderKind::Root,
        FolderKind::Tasks,
        FolderKind::Inbox,
        FolderKind::DeletedItems,
    ];

    pub(crate) fn code(self) -> u8 {
        match self {
            FolderKind::Root => 1,
            FolderKind::Tasks => 2,
            FolderKind::Inbox => 3,
            FolderKind::DeletedItems => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        FolderKind::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The display name Exchange gives the folder in an English mailbox.
    pub fn display_name(self) -> &'static str {
        match self {
            FolderKind::Root => "Top of Information Store",
            FolderKind::Tasks => "Tasks",
            FolderKind::Inbox => "Inbox",
            FolderKind::DeletedItems => "Deleted Items",
        }
    }

    /// The folder class (`IPF.Task` for Tasks).
    pub fn folder_class(self) -> &'static str {
        match self {
            FolderKind::Root => "IPF",
            FolderKind::Tasks => "IPF.Task",
            FolderKind::Inbox | FolderKind::DeletedItems => "IPF.Note",
        }
    }

    /// The element a GetFolder response uses for it.
    pub fn element(self) -> &'static str {
        match self {
            FolderKind::Tasks => "TasksFolder",
            _ => "Folder",
        }
    }

    /// The folder with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        FolderKind::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The name used in the admin API and the state file.
    pub fn name(self) -> &'static str {
        match self {
            FolderKind::Root => "msgfolderroot",
            FolderKind::Tasks => "tasks",
            FolderKind::Inbox => "inbox",
            FolderKind::DeletedItems => "deleteditems",
        }
    }
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(text: &str, tag: &[u8; 2], len: usize) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    (bytes.len() == len && bytes.starts_with(tag)).then_some(bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn pack(tag: &[u8; 2], mailbox: u32, n: u64) -> String {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(tag);
    b.extend_from_slice(&mailbox.to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    encode(&b)
}

fn unpack(text: &str, tag: &[u8; 2]) -> Option<(u32, u64)> {
    let b = decode(text, tag, 14)?;
    Some((u32_at(&b, 2), u64_at(&b, 6)))
}

/// The id of item `item` in mailbox `mailbox`.
pub fn item_id(mailbox: u32, item: u64) -> ItemIdValue {
    ItemIdValue(pack(b"IT", mailbox, item))
}

/// The mailbox and item numbers of an item id, `None` when it is malformed.
pub fn parse_item_id(id: &str) -> Option<(u32, u64)> {
    unpack(id, b"IT")
}

/// The change key issued at change number `cn` of `mailbox`.
pub fn change_key(mailbox: u32, cn: u64) -> ChangeKey {
    ChangeKey(pack(b"CK", mailbox, cn))
}

/// The mailbox and change number of a change key, `None` when it is malformed.
pub fn parse_change_key(ck: &str) -> Option<(u32, u64)> {
    unpack(ck, b"CK")
}

/// The id of a folder.
pub fn folder_id(mailbox: u32, folder: FolderKind) -> FolderIdValue {
    FolderIdValue(pack(b"FD", mailbox, u64::from(folder.code())))
}

/// The mailbox and folder of a folder id.
pub fn parse_folder_id(id: &str) -> Option<(u32, FolderKind)> {
    let (mailbox, code) = unpack(id, b"FD")?;
    Some((mailbox, FolderKind::from_code(u8::try_from(code).ok()?)?))
}

/// A folder's change key; folder properties never change in the simulator.
pub fn folder_change_key(mailbox: u32, folder: FolderKind) -> ChangeKey {
    ChangeKey(pack(b"CF", mailbox, u64::from(folder.code())))
}

/// The watermark after event `seq` of `mailbox` (0: before the first event).
pub fn watermark(mailbox: u32, seq: u64) -> Watermark {
    Watermark(pack(b"WM", mailbox, seq))
}

/// The mailbox and event sequence number of a watermark.
pub fn parse_watermark(wm: &str) -> Option<(u32, u64)> {
    unpack(wm, b"WM")
}

/// What a SyncFolderItems state says: where the client stands in one folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPoint {
    /// The mailbox.
    pub mailbox: u32,
    /// The folder.
    pub folder: FolderKind,
    /// Every change up to this change number has been reported.
    pub cn: u64,
    /// The items the client knows in the folder, sorted.
    pub known: Vec<u64>,
}

type HmacSha256 = Hmac<Sha256>;

const SYNC_MAGIC: &[u8; 3] = b"SS1";
const MAC_LEN: usize = 16;

impl SyncPoint {
    /// Encodes the point as an opaque state, authenticated with `secret` so that a forged or
    /// damaged state is refused (as Exchange refuses with ErrorInvalidSyncStateData).
    pub fn encode(&self, secret: &[u8]) -> SyncState {
        let mut b = Vec::with_capacity(24 + self.known.len() * 2);
        b.extend_from_slice(SYNC_MAGIC);
        b.extend_from_slice(&self.mailbox.to_be_bytes());
        b.push(self.folder.code());
        b.extend_from_slice(&self.cn.to_be_bytes());
        let mut prev = 0u64;
        for &n in &self.known {
            put_varint(&mut b, n - prev);
            prev = n;
        }
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(&b);
        b.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        SyncState(encode(&b))
    }

    /// Decodes a state; `None` when it is malformed or was not issued with `secret`.
    pub fn decode(state: &str, secret: &[u8]) -> Option<SyncPoint> {
        let b = URL_SAFE_NO_PAD.decode(state.trim()).ok()?;
        if b.len() < 16 + MAC_LEN || !b.starts_with(SYNC_MAGIC) {
            return None;
        }
        let (body, tag) = b.split_at(b.len() - MAC_LEN);
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        let mailbox = u32_at(body, 3);
        let folder = FolderKind::from_code(body[7])?;
        let cn = u64_at(body, 8);
        let mut known = Vec::new();
        let mut rest = &body[16..];
        let mut prev = 0u64;
        while !rest.is_empty() {
            let (delta, used) = get_varint(rest)?;
            prev = prev.checked_add(delta)?;
            known.push(prev);
            rest = &rest[used..];
        }
        Some(SyncPoint {
            mailbox,
            folder,
            cn,
            known,
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_kinds() {
        let id = item_id(7, 42);
        assert_eq!(parse_item_id(id.as_str()), Some((7, 42)));
        assert_eq!(parse_change_key(id.as_str()), None);
        assert_eq!(parse_item_id("AAMkAGI2"), None);
        let ck = change_key(7, 9);
        assert_eq!(parse_change_key(ck.as_str()), Some((7, 9)));
        let f = folder_id(3, FolderKind::Tasks);
        assert_eq!(parse_folder_id(f.as_str()), Some((3, FolderKind::Tasks)));
        assert_eq!(parse_watermark(watermark(3, 0).as_str()), Some((3, 0)));
    }

    #[test]
    fn sync_state_round_trips_and_refuses_tampering() {
        let p = SyncPoint {
            mailbox: 2,
            folder: FolderKind::Tasks,
            cn: 99,
            known: vec![1, 2, 300, 70000],
        };
        let s = p.encode(b"secret");
        assert_eq!(SyncPoint::decode(s.as_str(), b"secret"), Some(p));
        assert_eq!(SyncPoint::decode(s.as_str(), b"other"), None);
        let mut bad = s.0.clone();
        bad.replace_range(6..7, if &bad[6..7] == "A" { "B" } else { "A" });
        assert_eq!(SyncPoint::decode(&bad, b"secret"), None);
        assert_eq!(SyncPoint::decode("garbage!", b"secret"), None);
    }
}
