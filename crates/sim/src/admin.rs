//! The admin API under `/sim/` (JSON, no authentication: the simulator is a local tool).
//!
//! It does what a user does in Outlook, so that tests can make changes on the mailbox side: each
//! change goes through the same store code as EWS, so it moves the ChangeKey and the
//! LastModifiedTime and raises a notification. It also reports counters.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/sim/` | the route list |
//! | GET | `/sim/mailboxes` | mailboxes with item counts |
//! | GET | `/sim/mailboxes/{smtp}/tasks` | the Tasks folder, every field |
//! | POST | `/sim/mailboxes/{smtp}/tasks` | create a task as the owner |
//! | GET | `/sim/mailboxes/{smtp}/tasks/{id}` | one task |
//! | PATCH | `/sim/mailboxes/{smtp}/tasks/{id}` | change fields as the owner (`null` deletes) |
//! | DELETE | `/sim/mailboxes/{smtp}/tasks/{id}` | delete (`?move=true`: into Deleted Items) |
//! | POST | `/sim/mailboxes/{smtp}/tasks/{id}/bump` | new ChangeKey, no field change |
//! | PUT | `/sim/mailboxes/{smtp}/quota` | `{"exceeded": true}`: every create and update in the mailbox fails with ErrorQuotaExceeded until `false` |
//! | PUT | `/sim/mailboxes/{smtp}/backend` | `{"backend": n}`: move the mailbox to backend `n` (0-based, below `--backends`), as a database fail-over does; open streaming connections break |
//! | GET | `/sim/subscriptions` | live subscriptions: id, mailbox, kind, watermark, the backend holding it, the `X-AnchorMailbox` its Subscribe carried, whether its mailbox moved away since (`orphaned`) |
//! | GET | `/sim/counters` | counters per operation, in flight, throttled, failed, push, requests inside an announced back-off window (per caller) |
//! | POST | `/sim/counters/reset` | zero the counters |
//!
//! A change body is a JSON object of task fields by element name (`{"PercentComplete": 50}`),
//! applied in key order, or an array of `[name, value]` pairs applied in the order given (the
//! order matters for Status / PercentComplete: the last one wins).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::fields;
use crate::ids::{self, FolderKind};
use crate::ops::commit;
use crate::shared::{Resp, Sim, respond};
use crate::store::{FieldChange, Mailbox, Resolution, UpdateError};
use taskbridge_ews::types::{ItemKind, Path, Task};
use taskbridge_ews::xml::{NS_TYPES, XmlElement, XmlReader, XmlWriter};

pub use crate::shared::{Counters, InFlight};

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Resp {
    json_resp(status, &json!({ "error": msg }))
}

/// Answers an admin request.
pub(crate) async fn handle(sim: &Sim, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "cannot read the body (1 MiB at most)",
            );
        }
    };
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["sim"]) => json_resp(StatusCode::OK, &routes()),
        (Method::GET, ["sim", "mailboxes"]) => mailboxes(sim),
        (Method::GET, ["sim", "counters"]) => json_resp(StatusCode::OK, &sim.counters.snapshot()),
        (Method::POST, ["sim", "counters", "reset"]) => {
            sim.counters.reset();
            json_resp(StatusCode::OK, &sim.counters.snapshot())
        }
        (Method::GET, ["sim", "subscriptions"]) => subscriptions(sim),
        (Method::POST, ["sim", "subscriptions", "forget"]) => {
            let all = sim.subs.list();
            for s in &all {
                sim.subs.remove(s.id.as_str());
            }
            json_resp(StatusCode::OK, &json!({ "forgotten": all.len() }))
        }
        (Method::POST, ["sim", "streams", "cut"]) => {
            let open = sim.cut_streams();
            json_resp(StatusCode::OK, &json!({ "cut": open }))
        }
        (Method::PUT, ["sim", "mailboxes", smtp, "quota"]) => {
            let Some(mb) = sim.store.by_smtp(smtp) else {
                return error(StatusCode::NOT_FOUND, &format!("no mailbox {smtp}"));
            };
            match serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["exceeded"].as_bool())
            {
                Some(exceeded) => {
                    mb.quota_exceeded.store(exceeded, Ordering::SeqCst);
                    json_resp(
                        StatusCode::OK,
                        &json!({"smtp": mb.smtp, "quota_exceeded": exceeded}),
                    )
                }
                None => error(
                    StatusCode::BAD_REQUEST,
                    "the body is {\"exceeded\": true|false}",
                ),
            }
        }
        (Method::PUT, ["sim", "mailboxes", smtp, "backend"]) => {
            let Some(backend) = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["backend"].as_u64())
                .and_then(|n| usize::try_from(n).ok())
            else {
                return error(StatusCode::BAD_REQUEST, "the body is {\"backend\": n}");
            };
            match sim.move_mailbox(smtp, backend) {
                Ok(()) => json_resp(StatusCode::OK, &json!({"smtp": smtp, "backend": backend})),
                Err(e) if e.starts_with("no mailbox") => error(StatusCode::NOT_FOUND, &e),
                Err(e) => error(StatusCode::BAD_REQUEST, &e),
            }
        }
        (Method::GET, ["sim", "mailboxes", smtp, "inbox"]) => match sim.store.by_smtp(smtp) {
            Some(mb) => json_resp(StatusCode::OK, &json!(mb.inbox())),
            None => error(StatusCode::NOT_FOUND, &format!("no mailbox {smtp}")),
        },
        (_, ["sim", "mailboxes", smtp, "tasks", rest @ ..]) => {
            let Some(mb) = sim.store.by_smtp(smtp).cloned() else {
                return error(StatusCode::NOT_FOUND, &format!("no mailbox {smtp}"));
            };
            match (method, rest) {
                (Method::GET, []) => list_tasks(&mb),
                (Method::POST, []) => create_task(sim, &mb, &body).await,
                (Method::GET, [id]) => with_item(&mb, id, |item| {
                    json_resp(StatusCode::OK, &task_json(&mb, item))
                }),
                (Method::PATCH, [id]) => change_task(sim, &mb, id, &body).await,
                (Method::DELETE, [id]) => {
                    delete_task(sim, &mb, id, query.contains("move=true")).await
                }
                (Method::POST, [id, "bump"]) => bump_task(sim, &mb, id).await,
                _ => error(StatusCode::NOT_FOUND, "no such route; GET /sim/ lists them"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route; GET /sim/ lists them"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn routes() -> Value {
    json!({
        "routes": [
            "GET /sim/mailboxes",
            "GET /sim/mailboxes/{smtp}/tasks",
            "POST /sim/mailboxes/{smtp}/tasks",
            "GET /sim/mailboxes/{smtp}/tasks/{id}",
            "PATCH /sim/mailboxes/{smtp}/tasks/{id}",
            "DELETE /sim/mailboxes/{smtp}/tasks/{id}[?move=true]",
            "POST /sim/mailboxes/{smtp}/tasks/{id}/bump",
            "PUT /sim/mailboxes/{smtp}/quota",
            "PUT /sim/mailboxes/{smtp}/backend",
            "GET /sim/mailboxes/{smtp}/inbox",
            "GET /sim/subscriptions",
            "POST /sim/subscriptions/forget",
            "POST /sim/streams/cut",
            "GET /sim/counters",
            "POST /sim/counters/reset",
        ]
    })
}

fn mailboxes(sim: &Sim) -> Resp {
    let list: Vec<Value> = sim
        .store
        .all()
        .into_iter()
        .map(|mb| {
            let st = mb.lock();
            json!({
                "smtp": mb.smtp,
                "tasks": st.folder_items(FolderKind::Tasks).len(),
                "items": st.items.len(),
                "watermark": mb.head_watermark(),
                "tasks_folder_id": ids::folder_id(mb.no, FolderKind::Tasks),
                "backend": sim.backend_of(&mb.smtp),
            })
        })
        .collect();
    json_resp(StatusCode::OK, &Value::Array(list))
}

fn subscriptions(sim: &Sim) -> Resp {
    let list: Vec<Value> = sim
        .subs
        .list()
        .into_iter()
        .map(|s| {
            let kind = match &s.kind {
                crate::subs::SubKind::Push {
                    url,
                    status_frequency,
                } => {
                    json!({"push": {"url": url, "status_frequency": status_frequency}})
                }
                crate::subs::SubKind::Pull { timeout } => {
                    json!({"pull": {"timeout": timeout}})
                }
                crate::subs::SubKind::Streaming => json!("streaming"),
            };
            json!({
                "id": s.id,
                "mailbox": s.mailbox.smtp,
                "kind": kind,
                "watermark": ids::watermark(s.mailbox.no, s.position()),
                "backend": s.backend,
                "anchor": s.anchor,
                "orphaned": s.is_orphaned(),
            })
        })
        .collect();
    json_resp(StatusCode::OK, &Value::Array(list))
}

fn task_json(mb: &Mailbox, item: &crate::store::StoredItem) -> Value {
    let mut v = serde_json::to_value(item.full_view(mb)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("Folder".into(), json!(item.folder.name()));
        map.insert("Kind".into(), json!(item.kind.as_str()));
    }
    v
}

fn list_tasks(mb: &Mailbox) -> Resp {
    let st = mb.lock();
    let list: Vec<Value> = st
        .folder_items(FolderKind::Tasks)
        .into_iter()
        .map(|i| task_json(mb, i))
        .collect();
    json_resp(StatusCode::OK, &Value::Array(list))
}

fn item_no(mb: &Mailbox, id: &str) -> Option<u64> {
    match ids::parse_item_id(id) {
        Some((no, item)) if no == mb.no => Some(item),
        _ => None,
    }
}

fn with_item(mb: &Mailbox, id: &str, f: impl FnOnce(&crate::store::StoredItem) -> Resp) -> Resp {
    let st = mb.lock();
    match item_no(mb, id).and_then(|no| st.items.get(&no)) {
        Some(item) => f(item),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no item {id} in {}", mb.smtp),
        ),
    }
}

/// The (field URI, value) pairs of a change body, in application order.
fn parse_changes(body: &Bytes) -> Result<Vec<(String, Value)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let pairs: Vec<(String, Value)> = match v {
        Value::Object(map) => map.into_iter().collect(),
        Value::Array(list) => list
            .into_iter()
            .map(|p| match p {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let value = kv.pop().unwrap_or(Value::Null);
                    match kv.pop() {
                        Some(Value::String(k)) => Ok((k, value)),
                        _ => Err("each pair is [\"Field\", value]".to_string()),
                    }
                }
                _ => Err("each pair is [\"Field\", value]".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(
                "the body is an object of fields or an array of [field, value] pairs".into(),
            );
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let uri = fields::FIELD_URIS
                .iter()
                .find(|u| u.split(':').nth(1) == Some(k.as_str()))
                .ok_or_else(|| format!("unknown task field {k:?}"))?;
            Ok((uri.to_string(), v))
        })
        .collect()
}

/// Builds a task holding one field's value, by writing it as EWS XML and reading it back, so
/// the admin API parses values exactly as EWS does.
fn task_with(uri: &str, value: &Value) -> Result<Task, String> {
    let name = uri.split(':').nth(1).unwrap_or(uri);
    let mut w = XmlWriter::default();
    w.raw(format!(r#"<t:Task xmlns:t="{NS_TYPES}">"#).as_bytes());
    let qualified = format!("t:{name}");
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{name}: unsupported value {other}")),
    };
    match (name, value) {
        ("Body", v) => {
            w.tag(&qualified).attr("BodyType", "Text").text(&scalar(v)?);
        }
        ("Categories" | "Companies", Value::Array(list)) => {
            let strings: Vec<String> = list.iter().map(scalar).collect::<Result<_, _>>()?;
            w.tag(&qualified).children(|w| {
                for s in &strings {
                    w.text_element("t:String", s);
                }
            });
        }
        (_, v) => w.text_element(&qualified, &scalar(v)?),
    }
    w.raw(b"</t:Task>");
    let bytes = w.into_bytes();
    let mut r = XmlReader::new(&bytes);
    let root = r.root().map_err(|e| e.to_string())?;
    let task = Task::read(&mut r, root).map_err(|e| format!("{name}: {e}"))?;
    if !fields::has_field(uri, &task) {
        return Err(format!("{name}: value {value} does not read"));
    }
    Ok(task)
}

async fn finish(
    sim: &Sim,
    ack: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    ok: Resp,
) -> Resp {
    match ack {
        Some(rx) => match rx.await {
            Ok(Ok(())) => ok,
            _ => {
                sim.counters.failed.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the state file could not be written",
                )
            }
        },
        None => ok,
    }
}

async fn create_task(sim: &Sim, mb: &Mailbox, body: &Bytes) -> Resp {
    let changes = match parse_changes(body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut task = Task::default();
    for (uri, value) in &changes {
        if value.is_null() {
            continue;
        }
        match task_with(uri, value) {
            Ok(t) => {
                fields::copy_field(uri, &t, &mut task);
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        }
    }
    let (resp, ack) = {
        let mut st = mb.lock();
        match st.create(
            mb,
            FolderKind::Tasks,
            ItemKind::Task,
            task,
            chrono::Utc::now(),
            &mb.display_name,
        ) {
            Ok(no) => {
                let v = task_json(mb, &st.items[&no]);
                (json_resp(StatusCode::CREATED, &v), commit(sim, mb, &mut st))
            }
            Err((code, text)) => (
                error(StatusCode::BAD_REQUEST, &format!("{code}: {text}")),
                None,
            ),
        }
    };
    finish(sim, ack, resp).await
}

async fn change_task(sim: &Sim, mb: &Mailbox, id: &str, body: &Bytes) -> Resp {
    let pairs = match parse_changes(body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut changes = Vec::new();
    for (uri, value) in &pairs {
        if value.is_null() {
            changes.push(FieldChange::Delete(Path::field(uri)));
        } else {
            match task_with(uri, value) {
                Ok(t) => changes.push(FieldChange::Set(Path::field(uri), Box::new(t))),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            }
        }
    }
    let Some(no) = item_no(mb, id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no item {id} in {}", mb.smtp),
        );
    };
    let (resp, ack) = {
        let mut st = mb.lock();
        let r = st.update(
            mb,
            no,
            None,
            Resolution::AlwaysOverwrite,
            crate::store::ConflictModel::Merge,
            &changes,
            chrono::Utc::now(),
            &mb.display_name,
        );
        match r {
            Ok(_) => {
                let v = task_json(mb, &st.items[&no]);
                (json_resp(StatusCode::OK, &v), commit(sim, mb, &mut st))
            }
            Err(UpdateError::Item((code, text))) => {
                let status = if code == taskbridge_ews::types::ResponseCode::ErrorItemNotFound {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                (error(status, &format!("{code}: {text}")), None)
            }
            Err(UpdateError::Conflict(_)) => (error(StatusCode::CONFLICT, "conflict"), None),
        }
    };
    finish(sim, ack, resp).await
}

async fn delete_task(sim: &Sim, mb: &Mailbox, id: &str, to_deleted_items: bool) -> Resp {
    let Some(no) = item_no(mb, id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no item {id} in {}", mb.smtp),
        );
    };
    let (resp, ack) = {
        let mut st = mb.lock();
        let now = chrono::Utc::now();
        let r = if to_deleted_items {
            st.move_to(mb, no, FolderKind::DeletedItems, now)
                .map(|new| json!({"deleted": id, "moved_to": ids::item_id(mb.no, new)}))
        } else {
            st.delete(mb, no, now).map(|()| json!({"deleted": id}))
        };
        match r {
            Ok(v) => (json_resp(StatusCode::OK, &v), commit(sim, mb, &mut st)),
            Err((code, text)) => (
                error(StatusCode::NOT_FOUND, &format!("{code}: {text}")),
                None,
            ),
        }
    };
    finish(sim, ack, resp).await
}

async fn bump_task(sim: &Sim, mb: &Mailbox, id: &str) -> Resp {
    let Some(no) = item_no(mb, id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no item {id} in {}", mb.smtp),
        );
    };
    let (resp, ack) = {
        let mut st = mb.lock();
        match st.bump(mb, no, chrono::Utc::now()) {
            Ok(()) => {
                let v = task_json(mb, &st.items[&no]);
                (json_resp(StatusCode::OK, &v), commit(sim, mb, &mut st))
            }
            Err((code, text)) => (
                error(StatusCode::NOT_FOUND, &format!("{code}: {text}")),
                None,
            ),
        }
    };
    finish(sim, ack, resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_with_reads_values_like_ews() {
        let t = task_with("task:PercentComplete", &json!(40)).expect("percent");
        assert_eq!(t.percent_complete, Some(40.0));
        let t = task_with("item:Categories", &json!(["a", "b"])).expect("categories");
        assert_eq!(t.categories.map(|c| c.strings.len()), Some(2));
        let t = task_with("task:DueDate", &json!("2026-03-02T00:00:00Z")).expect("date");
        assert!(t.due_date.is_some());
        assert!(task_with("task:DueDate", &json!("soon")).is_err());
    }

    #[test]
    fn changes_keep_pair_order_and_map_names() {
        let pairs = parse_changes(&Bytes::from_static(
            br#"[["Status","Completed"],["PercentComplete",20]]"#,
        ))
        .expect("pairs");
        assert_eq!(pairs[0].0, "task:Status");
        assert_eq!(pairs[1].0, "task:PercentComplete");
        assert!(parse_changes(&Bytes::from_static(br#"{"Nope":1}"#)).is_err());
        assert_eq!(percent_decode("a%40b.com"), "a@b.com");
    }
}
