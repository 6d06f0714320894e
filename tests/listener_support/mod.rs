//! Helpers for the listener tests: a handler with a bounded queue, a raw HTTP/1.1 client over
//! a plain or TLS stream, and SendNotification bodies.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use taskbridge::listener::{
    HandlerAnswer, ListenerConfig, ListenerHandle, ListenerNotice, ListenerSecret,
    NotificationHandler,
};

/// The safety net of every read in these tests: far above any time-out under test, so that a
/// hung server fails the test instead of hanging it. Not a timing assertion.
pub const HANG: Duration = Duration::from_secs(30);

/// The engine stand-in: known subscriptions and a bounded queue, as `sync::NotificationSink`.
pub struct QueueHandler {
    pub known: HashSet<String>,
    pub tx: mpsc::Sender<ListenerNotice>,
}

impl NotificationHandler for QueueHandler {
    fn handle(&self, notice: ListenerNotice) -> HandlerAnswer {
        if !self.known.contains(&notice.subscription_id) {
            return HandlerAnswer::Unsubscribe;
        }
        match self.tx.try_send(notice) {
            Ok(()) => HandlerAnswer::Ok,
            Err(_) => HandlerAnswer::Busy,
        }
    }
}

/// A running listener with its queue.
pub struct Running {
    pub handle: ListenerHandle,
    pub rx: mpsc::Receiver<ListenerNotice>,
    pub path: String,
    pub config: ListenerConfig,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
}

/// A listener on 127.0.0.1 with a fresh secret, knowing `known`, with a queue of `capacity`.
pub async fn start(
    known: &[&str],
    capacity: usize,
    tweak: impl FnOnce(&mut ListenerConfig),
) -> Running {
    let mut config =
        ListenerConfig::new("127.0.0.1:0".parse().unwrap(), ListenerSecret::generate());
    config.path = "/ews/push".into();
    tweak(&mut config);
    let (tx, rx) = mpsc::channel(capacity);
    let handler = QueueHandler {
        known: known.iter().map(|s| s.to_string()).collect(),
        tx,
    };
    let path = config.notify_path().unwrap().expose().to_string();
    let handle = taskbridge::listener::start(config.clone(), handler)
        .await
        .unwrap();
    Running {
        handle,
        rx,
        path,
        config,
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Parses a whole HTTP/1.1 response (read to EOF). Bodies here are always Content-Length.
pub fn parse_response(raw: &[u8]) -> Option<RawResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<HashMap<_, _>>();
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers.get("content-length").and_then(|v| v.parse().ok()) {
        body.truncate(len);
    }
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Writes `head` and `body` on `stream` (on a task, ignoring write errors: the server may
/// answer and close before the body is all sent) and reads the response to EOF.
pub async fn exchange<S>(stream: S, head: Vec<u8>, body: Vec<u8>) -> Option<RawResponse>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        // Keep the write half open: shutting it down would end the request early.
        std::future::pending::<()>().await;
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(HANG, rd.read_to_end(&mut raw)).await;
    writer.abort();
    assert!(read.is_ok(), "the server neither answered nor closed");
    parse_response(&raw)
}

/// The request head of a POST with `Connection: close`.
pub fn post_head(path: &str, content_type: Option<&str>, length: Option<usize>) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    match length {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Encodes `body` as chunks of `chunk` bytes, with the final empty chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk * 10 + 8);
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// POSTs `body` with Content-Length on a new plain connection.
pub async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    exchange(
        stream,
        post_head(path, Some(content_type), Some(body.len())),
        body.to_vec(),
    )
    .await
    .expect("a response")
}

/// POSTs a notification body as Exchange does.
pub async fn notify(addr: SocketAddr, path: &str, body: &str) -> RawResponse {
    post(addr, path, "text/xml; charset=utf-8", body.as_bytes()).await
}

/// Any request without a body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exchange(stream, head.into_bytes(), Vec::new())
        .await
        .expect("a response")
}

/// A SendNotification as Exchange posts it: one ModifiedEvent per item (watermarks
/// `{watermark}-{i}`), then a StatusEvent with `watermark`.
pub fn notification(subscription: &str, items: &[&str], watermark: &str) -> String {
    let events: String = items
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "<t:ModifiedEvent><t:Watermark>{watermark}-{i}</t:Watermark>\
                 <t:TimeStamp>2026-03-02T10:00:0{i}Z</t:TimeStamp>\
                 <t:ItemId Id=\"{id}\" ChangeKey=\"CK{i}\"/>\
                 <t:ParentFolderId Id=\"TasksFolder\" ChangeKey=\"AQ==\"/></t:ModifiedEvent>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\" \
         xmlns:m=\"http://schemas.microsoft.com/exchange/services/2006/messages\">\
         <soap:Header><t:RequestServerVersion Version=\"Exchange2013_SP1\"/></soap:Header>\
         <soap:Body><m:SendNotification><m:ResponseMessages>\
         <m:SendNotificationResponseMessage ResponseClass=\"Success\">\
         <m:ResponseCode>NoError</m:ResponseCode><m:Notification>\
         <t:SubscriptionId>{subscription}</t:SubscriptionId>\
         <t:PreviousWatermark>{watermark}-prev</t:PreviousWatermark>\
         <t:MoreEvents>false</t:MoreEvents>{events}\
         <t:StatusEvent><t:Watermark>{watermark}</t:Watermark></t:StatusEvent>\
         </m:Notification></m:SendNotificationResponseMessage>\
         </m:ResponseMessages></m:SendNotification></soap:Body></soap:Envelope>"
    )
}

/// A rustls client configuration that trusts the test CA.
pub fn tls_client() -> tokio_rustls::TlsConnector {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(format!("{dir}/ca.pem")).unwrap(),
    )) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The test certificate and key.
pub fn tls_files() -> taskbridge::listener::TlsFiles {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    taskbridge::listener::TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Streams a body of `len` bytes from one reused buffer (chunked or with Content-Length) while
/// reading the answer for at most `wait`; returns the status (0 when there was none) and the
/// bytes the server let us send.
pub async fn upload(
    addr: SocketAddr,
    path: &str,
    len: u64,
    chunked_body: bool,
    wait: Duration,
) -> (u16, u64) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (0, 0);
    };
    let (mut rd, mut wr) = stream.into_split();
    let head = post_head(
        path,
        Some("text/xml"),
        (!chunked_body).then_some(len as usize),
    );
    // What was written is counted outside the task: the task is aborted once the answer is in,
    // possibly while blocked in a write, and its count must survive that.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let block = vec![b' '; 64 * 1024];
        if wr.write_all(&head).await.is_err() {
            return;
        }
        let mut sent = 0u64;
        while sent < len {
            let result = if chunked_body {
                let mut framed = format!("{:x}\r\n", block.len()).into_bytes();
                framed.extend_from_slice(&block);
                framed.extend_from_slice(b"\r\n");
                wr.write_all(&framed).await
            } else {
                wr.write_all(&block).await
            };
            if result.is_err() {
                break;
            }
            sent += block.len() as u64;
            counter.store(sent, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(wait, rd.read_to_end(&mut raw)).await;
    writer.abort();
    let _ = writer.await;
    let sent = written.load(std::sync::atomic::Ordering::Relaxed);
    (parse_response(&raw).map(|r| r.status).unwrap_or(0), sent)
}
