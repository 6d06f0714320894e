//! The e-mail notices owed (`notice_outbox`) and the rejections already announced
//! (`rejection_notices`), kept in the PM store beside the decisions they are about, so that a
//! restart between a rejection and its notice, or a notice Exchange did not take yet, loses
//! nothing. The notifier (`crate::exchange::notices`) composes and sends them; this is only
//! their bookkeeping, on either backend.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::rows::ts;
use super::sql::{Conn, Tx, args};
use super::{EmbeddedError, EmbeddedHost};
use crate::pm::ProjectGuid;
use crate::pm::host::StatusUpdateId;

/// A message owed and not yet taken by Exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedNotice {
    /// Its place in the outbox (oldest first).
    pub seq: i64,
    /// The recipients' addresses.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

impl EmbeddedHost {
    /// Owes the notice of a rejected update, unless it is owed or was sent already (by this
    /// process before a restart, or by another one on the same store). `true` when queued now.
    pub async fn owe_rejection_notice(
        &self,
        update: &StatusUpdateId,
        to: Vec<String>,
        subject: String,
        body: String,
    ) -> Result<bool, EmbeddedError> {
        let update = update.clone();
        let recipients = serde_json::to_string(&to)
            .map_err(|e| EmbeddedError::Corrupt(format!("the recipients do not serialise: {e}")))?;
        self.call(move |conn| {
            let tx = Tx::begin(conn)?;
            let now = ts(Utc::now());
            let fresh = tx.execute(
                "INSERT INTO rejection_notices (update_id, queued_at) VALUES (?1, ?2)
                 ON CONFLICT (update_id) DO NOTHING",
                args![update.0, now],
            )? == 1;
            if fresh {
                tx.execute(
                    "INSERT INTO notice_outbox (update_id, project, recipients, subject, body, created_at)
                     VALUES (?1, NULL, ?2, ?3, ?4, ?5)",
                    args![update.0, recipients, subject, body, now],
                )?;
            }
            tx.commit()?;
            Ok(fresh)
        })
        .await
    }

    /// Owes a digest of `project`'s waiting updates; one not sent yet for the project is
    /// replaced (this one names what waits now).
    pub async fn owe_digest(
        &self,
        project: ProjectGuid,
        to: Vec<String>,
        subject: String,
        body: String,
    ) -> Result<(), EmbeddedError> {
        let recipients = serde_json::to_string(&to)
            .map_err(|e| EmbeddedError::Corrupt(format!("the recipients do not serialise: {e}")))?;
        self.call(move |conn| {
            let tx = Tx::begin(conn)?;
            tx.execute(
                "DELETE FROM notice_outbox WHERE project = ?1",
                args![project.to_string()],
            )?;
            tx.execute(
                "INSERT INTO notice_outbox (update_id, project, recipients, subject, body, created_at)
                 VALUES (NULL, ?1, ?2, ?3, ?4, ?5)",
                args![project.to_string(), recipients, subject, body, ts(Utc::now())],
            )?;
            tx.commit()
        })
        .await
    }

    /// The rejected updates whose notice was queued (sent or not), and those rejected before
    /// notices were kept: none of them is announced (again).
    pub async fn announced_rejections(&self) -> Result<HashSet<StatusUpdateId>, EmbeddedError> {
        self.call(|conn| {
            conn.query("SELECT update_id FROM rejection_notices", &[])?
                .iter()
                .map(|r| Ok(StatusUpdateId(r.get(0)?)))
                .collect()
        })
        .await
    }

    /// Every notice owed and due (not being sent by another process, not waiting after a
    /// failure), oldest first.
    pub async fn owed_notices(&self) -> Result<Vec<OwedNotice>, EmbeddedError> {
        self.call(|conn| {
            conn.query(
                "SELECT seq, recipients, subject, body, attempts FROM notice_outbox
                 WHERE not_before IS NULL OR not_before <= ?1 ORDER BY seq",
                args![ts(Utc::now())],
            )?
            .iter()
            .map(|r| {
                let recipients: String = r.get(1)?;
                Ok(OwedNotice {
                    seq: r.get(0)?,
                    to: serde_json::from_str(&recipients).map_err(|_| {
                        EmbeddedError::Corrupt(format!("notice recipients {recipients:?}"))
                    })?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                })
            })
            .collect()
        })
        .await
    }

    /// Claims notice `seq` for a send that ends before `until`: `false` when it is not due
    /// (another process on the same store claimed it, or it waits after a failure), so that
    /// two `serve` processes do not both send it.
    pub async fn claim_notice(
        &self,
        seq: i64,
        until: DateTime<Utc>,
    ) -> Result<bool, EmbeddedError> {
        self.call(move |conn| {
            let claimed = conn.execute(
                "UPDATE notice_outbox SET not_before = ?2
                 WHERE seq = ?1 AND (not_before IS NULL OR not_before <= ?3)",
                args![seq, ts(until), ts(Utc::now())],
            )?;
            Ok(claimed == 1)
        })
        .await
    }

    /// Exchange took notice `seq`: it is owed no more.
    pub async fn notice_sent(&self, seq: i64) -> Result<(), EmbeddedError> {
        self.call(move |conn| {
            conn.execute("DELETE FROM notice_outbox WHERE seq = ?1", args![seq])?;
            Ok(())
        })
        .await
    }

    /// Notice `seq` was not taken: its attempts and the error are recorded; it stays owed,
    /// due again at `retry_at`.
    pub async fn notice_failed(
        &self,
        seq: i64,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), EmbeddedError> {
        let error = error.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE notice_outbox SET attempts = attempts + 1, last_error = ?2, not_before = ?3
                 WHERE seq = ?1",
                args![seq, error, ts(retry_at)],
            )?;
            Ok(())
        })
        .await
    }
}
