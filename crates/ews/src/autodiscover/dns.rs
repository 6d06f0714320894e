//! The DNS SRV record `_autodiscover._tcp.<domain>`, the last place Autodiscover looks when the
//! standard HTTPS places fail (Exchange's hosted and split-DNS deployments publish it).
//!
//! A single UDP question to the system's name servers (`/etc/resolv.conf`), written and read
//! here: the record is one question and a few answers, and a resolver library would add a
//! dependency tree for it. Answers are bounded (512 bytes, as DNS over UDP without EDNS is) and
//! read without trusting any length or pointer: a malformed answer is an error, never a panic
//! or a loop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// One SRV target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// Lower is tried first.
    pub priority: u16,
    /// Among equal priorities, higher first.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host name, without the trailing dot.
    pub target: String,
}

const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// The name servers of `/etc/resolv.conf` (port 53).
pub fn system_name_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The DNS question for the SRV records of `name`, with `id`.
pub fn query(name: &str, id: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(name.len() + 18);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // a standard query, recursion desired
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a domain name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&TYPE_SRV.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if out.len() > 512 {
        return Err(format!("{name:?} is too long"));
    }
    Ok(out)
}

/// The SRV answers of a response to the question with `id`, best first.
pub fn read_answer(msg: &[u8], id: u16) -> Result<Vec<SrvTarget>, String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "the answer is cut short".to_string())
    };
    if u16_at(0)? != id {
        return Err("an answer to another question".into());
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err("not an answer".into());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN: no such record
        rcode => return Err(format!("the name server answered with error {rcode}")),
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let (kind, class) = (u16_at(at)?, u16_at(at + 2)?);
        let len = usize::from(u16_at(at + 8)?);
        let data = at + 10;
        if msg.len() < data + len {
            return Err("the answer is cut short".into());
        }
        if kind == TYPE_SRV && class == CLASS_IN && len >= 7 {
            found.push(SrvTarget {
                priority: u16_at(data)?,
                weight: u16_at(data + 2)?,
                port: u16_at(data + 4)?,
                target: read_name(msg, data + 6)?,
            });
        }
        at = data + len;
    }
    // "." as the target means the service is decidedly not offered.
    found.retain(|t| !t.target.is_empty());
    found.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(found)
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(at).ok_or("the answer is cut short")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The name at `at`, following compression pointers (at most 16, so a loop ends).
fn read_name(msg: &[u8], mut at: usize) -> Result<String, String> {
    let mut labels: Vec<String> = Vec::new();
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or("the answer is cut short")?;
        if len == 0 {
            return Ok(labels.join("."));
        }
        if len & 0xc0 == 0xc0 {
            let low = *msg.get(at + 1).ok_or("the answer is cut short")?;
            jumps += 1;
            if jumps > 16 {
                return Err("a name with a pointer loop".into());
            }
            at = (usize::from(len & 0x3f) << 8) | usize::from(low);
            continue;
        }
        let label = msg
            .get(at + 1..at + 1 + usize::from(len))
            .ok_or("the answer is cut short")?;
        let label = std::str::from_utf8(label).map_err(|_| "a name that is not text")?;
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("{label:?} is not a host name label"));
        }
        labels.push(label.to_ascii_lowercase());
        at += 1 + usize::from(len);
    }
}

/// Asks `servers` in turn for the SRV records of `name`, each with `timeout`.
pub async fn lookup_srv(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<SrvTarget>, String> {
    if servers.is_empty() {
        return Err("no name server (none in /etc/resolv.conf)".into());
    }
    let mut last = String::new();
    for server in servers {
        let id: u16 = rand::random();
        let question = query(name, id)?;
        let attempt = async {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().expect("address")
            } else {
                "[::]:0".parse().expect("address")
            };
            let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
            socket.connect(server).await.map_err(|e| e.to_string())?;
            socket.send(&question).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 512];
            loop {
                let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
                // A stray datagram with another id is ignored, as resolvers do.
                match read_answer(&buf[..n], id) {
                    Err(e) if e == "an answer to another question" => continue,
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => last = format!("{server}: {e}"),
            Err(_) => last = format!("{server}: timed out after {timeout:?}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a name server writes it: the question, then SRV records whose names point
    /// back at the question's name.
    pub(crate) fn answer(id: u16, records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let q = query("_autodiscover._tcp.contoso.com", id).expect("query");
        let mut out = q.clone();
        out[2] = 0x81;
        out[3] = 0x80;
        out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (priority, weight, port, target) in records {
            out.extend_from_slice(&[0xc0, 12]); // the question's name
            out.extend_from_slice(&TYPE_SRV.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&300u32.to_be_bytes());
            let mut data = Vec::new();
            data.extend_from_slice(&priority.to_be_bytes());
            data.extend_from_slice(&weight.to_be_bytes());
            data.extend_from_slice(&port.to_be_bytes());
            for label in target.split('.').filter(|l| !l.is_empty()) {
                data.push(label.len() as u8);
                data.extend_from_slice(label.as_bytes());
            }
            data.push(0);
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        out
    }

    #[test]
    fn the_question_names_the_srv_record() {
        let q = query("_autodiscover._tcp.contoso.com", 0x1234).expect("query");
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(&q[12..26], b"\x0d_autodiscover");
        assert_eq!(&q[q.len() - 4..], &[0, 33, 0, 1]);
        assert!(query("a..b", 1).is_err());
    }

    #[test]
    fn answers_are_ordered_by_priority_then_weight() {
        let msg = answer(
            7,
            &[
                (10, 5, 443, "backup.contoso.com"),
                (0, 1, 443, "mail2.contoso.com"),
                (0, 9, 8443, "Mail.Contoso.com"),
            ],
        );
        let found = read_answer(&msg, 7).expect("answer");
        let targets: Vec<(&str, u16)> = found.iter().map(|t| (t.target.as_str(), t.port)).collect();
        assert_eq!(
            targets,
            [
                ("mail.contoso.com", 8443),
                ("mail2.contoso.com", 443),
                ("backup.contoso.com", 443)
            ]
        );
        assert!(read_answer(&msg, 8).is_err(), "another question's answer");
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let msg = answer(7, &[(0, 1, 443, "mail.contoso.com")]);
        for cut in 0..msg.len() {
            let _ = read_answer(&msg[..cut], 7);
        }
        // A name pointing at itself.
        let mut looped = answer(7, &[(0, 1, 443, "x")]);
        let at = looped.len() - 3;
        looped[at] = 0xc0;
        looped[at + 1] = u8::try_from(at).unwrap_or(0);
        assert!(read_answer(&looped, 7).is_err());
        let mut nx = answer(7, &[]);
        nx[3] = 0x83;
        assert_eq!(read_answer(&nx, 7), Ok(Vec::new()));
    }
}
