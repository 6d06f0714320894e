//! Replays a recorded session over real HTTP: each request the client sends must match the
//! recorded one byte for byte (schema order, values, headers of the envelope), and is answered
//! with the recorded response.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One recorded exchange.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub n: u64,
    pub operation: String,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
    pub status: u16,
}

/// Reads the inbound exchanges of a session folder in order.
pub fn load(dir: &Path) -> Vec<Exchange> {
    let index = std::fs::read_to_string(dir.join("index.jsonl")).expect("index.jsonl");
    index
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).expect("index line"))
        .filter(|v| v["direction"] == "inbound" && v["response"].is_string())
        .map(|v| Exchange {
            n: v["n"].as_u64().unwrap_or(0),
            operation: v["operation"].as_str().unwrap_or_default().to_string(),
            request: std::fs::read(dir.join(v["request"].as_str().unwrap())).expect("request"),
            response: std::fs::read(dir.join(v["response"].as_str().unwrap())).expect("response"),
            status: v["status"].as_u64().unwrap_or(200) as u16,
        })
        .collect()
}

/// What went wrong during a replay.
#[derive(Debug, Default)]
pub struct Outcome {
    pub served: usize,
    pub mismatches: Vec<String>,
}

/// A replay server on loopback.
pub struct Replay {
    pub url: String,
    pending: Arc<Mutex<VecDeque<Exchange>>>,
    outcome: Arc<Mutex<Outcome>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Replay {
    /// Serves the session in `dir`.
    pub async fn start(dir: &Path) -> Replay {
        let pending = Arc::new(Mutex::new(VecDeque::from(load(dir))));
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (p, o) = (pending.clone(), outcome.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (p, o) = (p.clone(), o.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let (p, o) = (p.clone(), o.clone());
                                async move { Ok::<_, hyper::Error>(answer(req, &p, &o).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        });
        Replay {
            url: format!("http://{addr}/EWS/Exchange.asmx"),
            pending,
            outcome,
            stop: Some(stop),
        }
    }

    /// Exchanges not asked for yet.
    pub fn remaining(&self) -> usize {
        self.pending.lock().expect("lock").len()
    }

    /// What happened.
    pub fn outcome(&self) -> Outcome {
        let o = self.outcome.lock().expect("lock");
        Outcome {
            served: o.served,
            mismatches: o.mismatches.clone(),
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    pending: &Mutex<VecDeque<Exchange>>,
    outcome: &Mutex<Outcome>,
) -> Response<Full<Bytes>> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let next = pending.lock().expect("lock").pop_front();
    let Some(ex) = next else {
        outcome
            .lock()
            .expect("lock")
            .mismatches
            .push("a request after the end of the session".into());
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    if body.as_ref() != ex.request.as_slice() {
        outcome
            .lock()
            .expect("lock")
            .mismatches
            .push(describe(&ex, &body));
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    outcome.lock().expect("lock").served += 1;
    Response::builder()
        .status(ex.status)
        .header("content-type", "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(ex.response)))
        .expect("response")
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

/// A readable account of where a request differs from the recording.
fn describe(ex: &Exchange, got: &[u8]) -> String {
    let want = &ex.request;
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let around = |b: &[u8]| {
        let from = at.saturating_sub(60);
        let to = (at + 60).min(b.len());
        String::from_utf8_lossy(&b[from..to]).into_owned()
    };
    format!(
        "exchange {} ({}) differs at byte {at}:\n  recorded: ...{}...\n  sent:     ...{}...",
        ex.n,
        ex.operation,
        around(want),
        around(got)
    )
}

/// Copies a fresh recording into the fixtures folder, replacing what was there.
pub fn store_recording(from: &Path, to: &PathBuf) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("create fixture dir");
    for entry in std::fs::read_dir(from).expect("recording") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
