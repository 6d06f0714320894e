//! `--state FILE`: the simulator's state in SQLite, written through.
//!
//! Every request that changes a mailbox hands its writes to one writer thread while it still
//! holds the mailbox lock (so they reach the file in change order), and answers only after the
//! writer committed them: an acknowledged write survives SIGKILL. The writer groups whatever
//! is queued into one transaction (group commit), so concurrent requests share a commit.
//! The file runs in WAL mode with `synchronous=NORMAL`: safe against a killed process, while a
//! power loss may lose the last commits.
//!
//! Kept: mailboxes (with their numbers, which item ids embed), items, tombstones, the event log
//! (so a watermark resumes after a restart), counters and the key of sync states. Not kept:
//! subscriptions, which end with the process as Exchange's do on a restart; a subscriber
//! notices the silence and subscribes again from its last watermark.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::SimError;
use crate::ids::FolderKind;
use crate::store::{EVENT_LOG_CAP, LoggedEvent, Mailbox, MailboxState, StoredItem};
use taskbridge_ews::types::{ItemKind, Task};
use taskbridge_ews::xml::{NS_TYPES, XmlElement, XmlReader, XmlText, XmlWriter};

type Ack = oneshot::Sender<Result<(), String>>;

enum Row {
    Item {
        no: u64,
        folder: &'static str,
        kind: String,
        xml: String,
        cn: u64,
        created_cn: u64,
        change_count: i32,
        created: String,
        modified: String,
        modified_by: String,
        prop_cn: String,
    },
    Removed(u64),
    Tombstone {
        no: u64,
        folder: &'static str,
        cn: u64,
    },
    Event {
        seq: u64,
        json: String,
    },
}

struct Batch {
    mailbox: u32,
    counters: (u64, u64, u64),
    rows: Vec<Row>,
    trim_before: Option<u64>,
}

enum Msg {
    Batch(Batch, Ack),
    Close(oneshot::Sender<()>),
}

/// The writer side of the state file.
#[derive(Debug)]
pub struct Persist {
    // A std Mutex around the sender: sending never blocks (the channel is unbounded).
    tx: Mutex<mpsc::Sender<Msg>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes (
    no INTEGER PRIMARY KEY, smtp TEXT NOT NULL UNIQUE,
    cn INTEGER NOT NULL DEFAULT 0, next_item INTEGER NOT NULL DEFAULT 1,
    event_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS items (
    mailbox INTEGER NOT NULL, no INTEGER NOT NULL, folder TEXT NOT NULL, kind TEXT NOT NULL,
    xml TEXT NOT NULL, cn INTEGER NOT NULL, created_cn INTEGER NOT NULL,
    change_count INTEGER NOT NULL, created TEXT NOT NULL, modified TEXT NOT NULL,
    modified_by TEXT NOT NULL, prop_cn TEXT NOT NULL, PRIMARY KEY (mailbox, no));
CREATE TABLE IF NOT EXISTS tombstones (
    mailbox INTEGER NOT NULL, no INTEGER NOT NULL, folder TEXT NOT NULL, cn INTEGER NOT NULL,
    PRIMARY KEY (mailbox, no));
CREATE TABLE IF NOT EXISTS events (
    mailbox INTEGER NOT NULL, seq INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (mailbox, seq));
";

fn db_err(e: impl std::fmt::Display) -> SimError {
    SimError::State(e.to_string())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Persist {
    /// Opens (or creates) the state file, registers new mailbox owners and loads everything.
    pub fn open(
        path: &Path,
        owners: &[String],
    ) -> Result<(Persist, Vec<Mailbox>, Vec<u8>), SimError> {
        let conn = Connection::open(path)
            .map_err(|e| SimError::State(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let secret: Vec<u8> = match conn.query_row(
            "SELECT value FROM meta WHERE key = 'sync_secret'",
            [],
            |r| r.get(0),
        ) {
            Ok(s) => s,
            Err(rusqlite::Error::QueryReturnedNoRows) => {
                let s: [u8; 32] = rand::random();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('sync_secret', ?1)",
                    params![s.to_vec()],
                )
                .map_err(db_err)?;
                s.to_vec()
            }
            Err(e) => return Err(db_err(e)),
        };
        let mut known: HashMap<String, u32> = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT no, smtp FROM mailboxes")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
                .map_err(db_err)?;
            for row in rows {
                let (no, smtp) = row.map_err(db_err)?;
                known.insert(smtp, no);
            }
        }
        let mut next_no = known.values().copied().max().unwrap_or(0) + 1;
        for smtp in owners {
            if !known.contains_key(smtp) {
                conn.execute(
                    "INSERT INTO mailboxes (no, smtp) VALUES (?1, ?2)",
                    params![next_no, smtp],
                )
                .map_err(db_err)?;
                known.insert(smtp.clone(), next_no);
                next_no += 1;
            }
        }
        let mut mailboxes = Vec::new();
        for (smtp, no) in &known {
            mailboxes.push(Mailbox::with_state(*no, smtp, load_mailbox(&conn, *no)?));
        }
        mailboxes.sort_by_key(|m| m.no);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sim-state-writer".into())
            .spawn(move || writer(conn, rx))
            .map_err(db_err)?;
        Ok((Persist { tx: Mutex::new(tx) }, mailboxes, secret))
    }

    /// Queues the mailbox's pending writes; the receiver resolves once they are committed.
    /// Call with the mailbox locked.
    pub fn submit(
        &self,
        mb: &Mailbox,
        st: &mut MailboxState,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        let dirty = std::mem::take(&mut st.dirty);
        if dirty.is_empty() {
            return None;
        }
        let mut rows = Vec::new();
        let mut items = dirty.items;
        items.sort_unstable();
        items.dedup();
        for no in items {
            rows.push(match st.items.get(&no) {
                Some(item) => item_row(item),
                None => Row::Removed(no),
            });
        }
        for no in dirty.tombstones {
            if let Some((folder, cn)) = st.tombstones.get(&no) {
                rows.push(Row::Tombstone {
                    no,
                    folder: folder.name(),
                    cn: *cn,
                });
            }
        }
        let first_kept = st.events.front().map(|e| e.seq);
        for seq in dirty.events {
            if let Some(e) = first_kept.and_then(|f| st.events.get(usize::try_from(seq - f).ok()?))
            {
                rows.push(Row::Event {
                    seq,
                    json: serde_json::to_string(e).unwrap_or_default(),
                });
            }
        }
        let trim_before = (st.events.len() >= EVENT_LOG_CAP)
            .then_some(first_kept)
            .flatten();
        let batch = Batch {
            mailbox: mb.no,
            counters: (st.cn, st.next_item, st.event_seq),
            rows,
            trim_before,
        };
        let (ack, rx) = oneshot::channel();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::SendError(Msg::Batch(_, ack))) = tx.send(Msg::Batch(batch, ack)) {
            let _ = ack.send(Err("the state writer has stopped".into()));
        }
        Some(rx)
    }

    /// Lets the writer finish what is queued and stop.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Msg::Close(done))
            .is_ok();
        if sent {
            let _ = wait.await;
        }
    }
}

fn item_row(item: &StoredItem) -> Row {
    let mut w = XmlWriter::default();
    w.raw(format!(r#"<w xmlns:t="{NS_TYPES}">"#).as_bytes());
    item.task.write(&mut w, "t:Task");
    w.raw(b"</w>");
    Row::Item {
        no: item.no,
        folder: item.folder.name(),
        kind: item.kind.as_str().to_string(),
        xml: String::from_utf8(w.into_bytes()).unwrap_or_default(),
        cn: item.cn,
        created_cn: item.created_cn,
        change_count: item.change_count,
        created: item.created.to_text().into_owned(),
        modified: item.modified.to_text().into_owned(),
        modified_by: item.modified_by.clone(),
        prop_cn: serde_json::to_string(&item.prop_cn).unwrap_or_default(),
    }
}

fn read_task(xml: &str) -> Result<Task, SimError> {
    let mut r = XmlReader::new(xml.as_bytes());
    let root = r.root().map_err(db_err)?;
    let el = r
        .next_child(&root)
        .map_err(db_err)?
        .ok_or_else(|| SimError::State("an item row holds no task".into()))?;
    Task::read(&mut r, el).map_err(db_err)
}

fn folder(name: &str) -> Result<FolderKind, SimError> {
    FolderKind::from_name(name).ok_or_else(|| SimError::State(format!("unknown folder {name:?}")))
}

fn load_mailbox(conn: &Connection, no: u32) -> Result<MailboxState, SimError> {
    let (cn, next_item, event_seq): (i64, i64, i64) = conn
        .query_row(
            "SELECT cn, next_item, event_seq FROM mailboxes WHERE no = ?1",
            params![no],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(db_err)?;
    let mut st = MailboxState {
        cn: to_u64(cn),
        next_item: to_u64(next_item).max(1),
        event_seq: to_u64(event_seq),
        ..MailboxState::default()
    };
    let mut stmt = conn
        .prepare(
            "SELECT no, folder, kind, xml, cn, created_cn, change_count, created, modified, modified_by, prop_cn FROM items WHERE mailbox = ?1",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![no], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i32>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, String>(10)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (
            ino,
            f,
            kind,
            xml,
            icn,
            created_cn,
            change_count,
            created,
            modified,
            modified_by,
            prop_cn,
        ) = row.map_err(db_err)?;
        let time = |t: &str| {
            chrono::DateTime::<chrono::Utc>::from_text(t)
                .map_err(|e| SimError::State(format!("bad time {t:?}: {e}")))
        };
        let item = StoredItem {
            no: to_u64(ino),
            folder: folder(&f)?,
            kind: ItemKind::from_text(&kind).unwrap_or(ItemKind::Task),
            task: read_task(&xml)?,
            cn: to_u64(icn),
            created_cn: to_u64(created_cn),
            change_count,
            created: time(&created)?,
            modified: time(&modified)?,
            modified_by,
            prop_cn: serde_json::from_str(&prop_cn).map_err(db_err)?,
        };
        st.items.insert(item.no, item);
    }
    let mut stmt = conn
        .prepare("SELECT no, folder, cn FROM tombstones WHERE mailbox = ?1")
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![no], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (tno, f, tcn) = row.map_err(db_err)?;
        st.tombstones
            .insert(to_u64(tno), (folder(&f)?, to_u64(tcn)));
    }
    let mut stmt = conn
        .prepare("SELECT json FROM events WHERE mailbox = ?1 ORDER BY seq DESC LIMIT ?2")
        .map_err(db_err)?;
    let rows = stmt
        .query_map(
            params![no, i64::try_from(EVENT_LOG_CAP).unwrap_or(i64::MAX)],
            |r| r.get::<_, String>(0),
        )
        .map_err(db_err)?;
    let mut events = VecDeque::new();
    for row in rows {
        let e: LoggedEvent = serde_json::from_str(&row.map_err(db_err)?).map_err(db_err)?;
        events.push_front(e);
    }
    st.events = events;
    Ok(st)
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut group = Vec::new();
        let mut close = None;
        let mut take = |msg: Msg, group: &mut Vec<(Batch, Ack)>| match msg {
            Msg::Batch(b, ack) => group.push((b, ack)),
            Msg::Close(done) => close = Some(done),
        };
        take(first, &mut group);
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut group),
                Err(_) => break,
            }
        }
        let result = write_group(&mut conn, &group).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot write the simulator state");
        }
        for (_, ack) in group {
            let _ = ack.send(result.clone());
        }
        if let Some(done) = close {
            let _ = done.send(());
            return;
        }
    }
}

fn write_group(conn: &mut Connection, group: &[(Batch, Ack)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (b, _) in group {
        let m = b.mailbox;
        tx.execute(
            "UPDATE mailboxes SET cn = ?2, next_item = ?3, event_seq = ?4 WHERE no = ?1",
            params![
                m,
                to_i64(b.counters.0),
                to_i64(b.counters.1),
                to_i64(b.counters.2)
            ],
        )?;
        for row in &b.rows {
            match row {
                Row::Item {
                    no,
                    folder,
                    kind,
                    xml,
                    cn,
                    created_cn,
                    change_count,
                    created,
                    modified,
                    modified_by,
                    prop_cn,
                } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO items (mailbox, no, folder, kind, xml, cn, created_cn, change_count, created, modified, modified_by, prop_cn) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        params![m, to_i64(*no), folder, kind, xml, to_i64(*cn), to_i64(*created_cn), change_count, created, modified, modified_by, prop_cn],
                    )?;
                }
                Row::Removed(no) => {
                    tx.execute(
                        "DELETE FROM items WHERE mailbox = ?1 AND no = ?2",
                        params![m, to_i64(*no)],
                    )?;
                }
                Row::Tombstone { no, folder, cn } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO tombstones (mailbox, no, folder, cn) VALUES (?1, ?2, ?3, ?4)",
                        params![m, to_i64(*no), folder, to_i64(*cn)],
                    )?;
                }
                Row::Event { seq, json } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO events (mailbox, seq, json) VALUES (?1, ?2, ?3)",
                        params![m, to_i64(*seq), json],
                    )?;
                }
            }
        }
        if let Some(before) = b.trim_before {
            tx.execute(
                "DELETE FROM events WHERE mailbox = ?1 AND seq < ?2",
                params![m, to_i64(before)],
            )?;
        }
    }
    tx.commit()
}
