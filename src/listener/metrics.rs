//! Counters in the Prometheus text exposition format (version 0.0.4), from pluggable sources.
//!
//! Each part of the process that counts something is a [`MetricsSource`]: the listener's own
//! [`ListenerMetrics`], the EWS clients ([`EwsClient`] implements it), and the engine's counters,
//! which the wiring copies into [`EngineCounters`] on each scrape (this layer does not know the
//! engine). The admin endpoint concatenates their output. Each metric family must come from one
//! source only: the format allows one `# HELP`/`# TYPE` block per family.
//! See <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ews::EwsClient;
use crate::ews::transport::{RequestMetrics, RequestOutcome};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that writes metric families in the text exposition format.
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends this source's families (`# HELP`, `# TYPE`, samples) to `out`.
    fn render(&self, out: &mut String);
}

/// A closure is a source; handy for copying counters kept elsewhere at scrape time.
impl<F> MetricsSource for F
where
    F: Fn(&mut String) + Send + Sync + 'static,
{
    fn render(&self, out: &mut String) {
        self(out)
    }
}

/// The kind of a metric family (`# TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn write_family(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    let kind = match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
    };
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line, `name{label="value",...} value`, escaping the label values.
pub fn write_sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            for c in val.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Writes a counter family with a single unlabelled sample.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    write_family(out, name, help, MetricKind::Counter);
    write_sample(out, name, &[], value);
}

/// What the listener did with a request; the `outcome` label of
/// `taskbridge_listener_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenerOutcome {
    /// Answered `OK`.
    Ok,
    /// Answered `Unsubscribe`.
    Unsubscribe,
    /// Answered 503: the handler was busy.
    Busy,
    /// Answered 404: not the notification path.
    NotFound,
    /// Answered 405: the notification path with another method than POST.
    MethodNotAllowed,
    /// Answered 413: the body was over the cap.
    TooLarge,
    /// Answered 400: not a readable SendNotification, or the body broke off.
    BadRequest,
    /// Answered 415: not an XML content type.
    UnsupportedMediaType,
    /// The head or the body took too long (408, or the connection closed).
    Timeout,
    /// A connection closed unserved to keep room for others: over the per-address limit, or
    /// the longest waiting for a head when the connection table was full.
    Shed,
}

impl ListenerOutcome {
    /// Every outcome, in the order they are rendered.
    pub const ALL: [ListenerOutcome; 10] = [
        ListenerOutcome::Ok,
        ListenerOutcome::Unsubscribe,
        ListenerOutcome::Busy,
        ListenerOutcome::NotFound,
        ListenerOutcome::MethodNotAllowed,
        ListenerOutcome::TooLarge,
        ListenerOutcome::BadRequest,
        ListenerOutcome::UnsupportedMediaType,
        ListenerOutcome::Timeout,
        ListenerOutcome::Shed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerOutcome::Ok => "ok",
            ListenerOutcome::Unsubscribe => "unsubscribe",
            ListenerOutcome::Busy => "busy",
            ListenerOutcome::NotFound => "not_found",
            ListenerOutcome::MethodNotAllowed => "method_not_allowed",
            ListenerOutcome::TooLarge => "too_large",
            ListenerOutcome::BadRequest => "bad_request",
            ListenerOutcome::UnsupportedMediaType => "unsupported_media_type",
            ListenerOutcome::Timeout => "timeout",
            ListenerOutcome::Shed => "shed",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|o| *o == self)
            .expect("ALL lists every outcome")
    }
}

/// The listener's request counters, by outcome. Shared by the server and the admin endpoint.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    requests: [AtomicU64; ListenerOutcome::ALL.len()],
}

impl ListenerMetrics {
    /// Requests answered with `outcome` so far.
    pub fn get(&self, outcome: ListenerOutcome) -> u64 {
        self.requests[outcome.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, outcome: ListenerOutcome) {
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

impl MetricsSource for ListenerMetrics {
    fn render(&self, out: &mut String) {
        let name = "taskbridge_listener_requests_total";
        write_family(
            out,
            name,
            "Requests to the push listener, by what it answered.",
            MetricKind::Counter,
        );
        for outcome in ListenerOutcome::ALL {
            write_sample(
                out,
                name,
                &[("outcome", outcome.as_str())],
                self.get(outcome),
            );
        }
    }
}

/// The sync engine's counters as plain numbers, for the wiring to fill from the engine's
/// metrics at each scrape (the listener layer does not depend on the engine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Push notifications received for known subscriptions.
    pub notifications: u64,
    /// Mailbox syncs queued by notifications.
    pub events_queued: u64,
    /// Mailbox passes not made because the notifications named only item versions
    /// taskbridge wrote itself.
    pub own_echoes: u64,
    /// Mailbox passes that listed the folder's changes.
    pub listing_passes: u64,
    /// Mailbox passes that read the items notifications named, without a listing.
    pub item_passes: u64,
    /// Status updates applied on the PM side.
    pub updates_applied: u64,
    /// Status updates left waiting for approval.
    pub updates_pending: u64,
    /// Status updates rejected.
    pub updates_rejected: u64,
    /// Conflicts decided by policy or kept for a person.
    pub conflicts: u64,
    /// Mailbox items created.
    pub created: u64,
    /// Mailbox items updated.
    pub written: u64,
    /// Mailbox items deleted.
    pub deleted: u64,
    /// Items parked after repeated failures.
    pub parked: u64,
    /// Reconciliation passes.
    pub reconciles: u64,
    /// Rounds of publishing every project.
    pub publish_rounds: u64,
    /// Streaming connections open now.
    pub streams_open: u64,
    /// Streaming connections opened again after one closed or failed.
    pub stream_reconnects: u64,
}

impl MetricsSource for EngineCounters {
    fn render(&self, out: &mut String) {
        write_counter(
            out,
            "taskbridge_notifications_received_total",
            "Push notifications received for known subscriptions.",
            self.notifications,
        );
        write_counter(
            out,
            "taskbridge_events_queued_total",
            "Mailbox syncs queued by notifications.",
            self.events_queued,
        );
        write_counter(
            out,
            "taskbridge_echo_passes_skipped_total",
            "Mailbox passes not made: the notifications named only versions taskbridge wrote.",
            self.own_echoes,
        );
        let name = "taskbridge_mailbox_passes_total";
        write_family(
            out,
            name,
            "Mailbox passes, by how they found the changed items: a listing of the folder's \
             changes, or the items notifications named, read by their ids.",
            MetricKind::Counter,
        );
        for (kind, n) in [
            ("listing", self.listing_passes),
            ("items", self.item_passes),
        ] {
            write_sample(out, name, &[("kind", kind)], n);
        }
        let name = "taskbridge_status_updates_total";
        write_family(
            out,
            name,
            "Task status updates submitted to the PM side, by outcome.",
            MetricKind::Counter,
        );
        for (outcome, n) in [
            ("applied", self.updates_applied),
            ("pending", self.updates_pending),
            ("rejected", self.updates_rejected),
        ] {
            write_sample(out, name, &[("outcome", outcome)], n);
        }
        write_counter(
            out,
            "taskbridge_conflicts_total",
            "Fields changed on both sides, decided by policy or kept for a person.",
            self.conflicts,
        );
        write_counter(
            out,
            "taskbridge_items_created_total",
            "Mailbox task items created.",
            self.created,
        );
        write_counter(
            out,
            "taskbridge_items_written_total",
            "Mailbox task items updated.",
            self.written,
        );
        write_counter(
            out,
            "taskbridge_items_deleted_total",
            "Mailbox task items deleted.",
            self.deleted,
        );
        write_counter(
            out,
            "taskbridge_items_parked_total",
            "Items parked after repeated failures.",
            self.parked,
        );
        write_counter(
            out,
            "taskbridge_reconciliations_total",
            "Reconciliation passes over a mailbox.",
            self.reconciles,
        );
        write_counter(
            out,
            "taskbridge_publish_rounds_total",
            "Rounds of publishing every project (at start, after a lease gain, at a reconciliation).",
            self.publish_rounds,
        );
        let name = "taskbridge_streaming_connections";
        write_family(
            out,
            name,
            "GetStreamingEvents connections open now (streaming mode).",
            MetricKind::Gauge,
        );
        write_sample(out, name, &[], self.streams_open);
        write_counter(
            out,
            "taskbridge_streaming_reconnects_total",
            "Streaming connections opened again after one closed at its time-out or failed.",
            self.stream_reconnects,
        );
    }
}

/// Renders EWS request counters: `taskbridge_ews_requests_total{operation,outcome}` (every
/// outcome of each operation seen, zeros included), `taskbridge_ews_backoff_seconds_total` and
/// `taskbridge_ews_retry_delay_seconds_total`.
pub fn render_ews(out: &mut String, metrics: &RequestMetrics) {
    let name = "taskbridge_ews_requests_total";
    write_family(
        out,
        name,
        "HTTP exchanges with EWS, by operation and outcome.",
        MetricKind::Counter,
    );
    let mut operations: Vec<&str> = metrics.requests.keys().map(|(op, _)| *op).collect();
    operations.dedup();
    for op in operations {
        for outcome in RequestOutcome::ALL {
            write_sample(
                out,
                name,
                &[("operation", op), ("outcome", outcome.as_str())],
                metrics.count(op, outcome),
            );
        }
    }
    write_counter(
        out,
        "taskbridge_ews_backoff_seconds_total",
        "Seconds EWS requests waited for the server's back-off (ErrorServerBusy), summed over requests.",
        metrics.back_off_waited.as_secs_f64(),
    );
    write_counter(
        out,
        "taskbridge_ews_retry_delay_seconds_total",
        "Seconds slept between attempts after transient EWS failures.",
        metrics.retry_delay.as_secs_f64(),
    );
}

impl MetricsSource for EwsClient {
    fn render(&self, out: &mut String) {
        render_ews(out, &self.request_metrics());
    }
}

/// Several clients (one per endpoint and credential) are rendered as their sum.
impl MetricsSource for Vec<EwsClient> {
    fn render(&self, out: &mut String) {
        let mut sum = RequestMetrics::default();
        for client in self {
            sum.merge(&client.request_metrics());
        }
        render_ews(out, &sum);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn metrics_sample_escapes_label_values() {
        let mut out = String::new();
        write_sample(&mut out, "m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\n");
    }

    #[test]
    fn metrics_listener_renders_every_outcome() {
        let m = ListenerMetrics::default();
        m.record(ListenerOutcome::Ok);
        m.record(ListenerOutcome::Ok);
        m.record(ListenerOutcome::Timeout);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.starts_with("# HELP taskbridge_listener_requests_total "));
        assert!(out.contains("\n# TYPE taskbridge_listener_requests_total counter\n"));
        assert!(out.contains("taskbridge_listener_requests_total{outcome=\"ok\"} 2\n"));
        assert!(out.contains("taskbridge_listener_requests_total{outcome=\"timeout\"} 1\n"));
        assert!(out.contains("taskbridge_listener_requests_total{outcome=\"not_found\"} 0\n"));
        assert_eq!(out.lines().count(), 2 + ListenerOutcome::ALL.len());
    }

    #[test]
    fn metrics_ews_renders_zeros_for_seen_operations_and_seconds() {
        let mut m = RequestMetrics::default();
        m.requests.insert(("GetItem", RequestOutcome::Throttled), 4);
        m.requests.insert(("GetItem", RequestOutcome::Success), 9);
        m.requests
            .insert(("UpdateItem", RequestOutcome::Success), 1);
        m.back_off_waited = Duration::from_millis(1500);
        let mut out = String::new();
        render_ews(&mut out, &m);
        assert!(out.contains(
            "taskbridge_ews_requests_total{operation=\"GetItem\",outcome=\"throttled\"} 4\n"
        ));
        assert!(out.contains(
            "taskbridge_ews_requests_total{operation=\"GetItem\",outcome=\"fault\"} 0\n"
        ));
        assert!(out.contains(
            "taskbridge_ews_requests_total{operation=\"UpdateItem\",outcome=\"success\"} 1\n"
        ));
        assert_eq!(
            out.matches("operation=\"GetItem\"").count(),
            RequestOutcome::ALL.len()
        );
        assert!(out.contains("taskbridge_ews_backoff_seconds_total 1.5\n"));
        assert!(out.contains("taskbridge_ews_retry_delay_seconds_total 0\n"));
    }

    #[test]
    fn metrics_engine_counters_render_one_family_each() {
        let c = EngineCounters {
            updates_pending: 2,
            reconciles: 7,
            publish_rounds: 1,
            own_echoes: 4,
            item_passes: 9,
            ..EngineCounters::default()
        };
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains(
            "taskbridge_echo_passes_skipped_total 4
"
        ));
        assert!(out.contains("taskbridge_status_updates_total{outcome=\"pending\"} 2\n"));
        assert!(out.contains("taskbridge_mailbox_passes_total{kind=\"items\"} 9\n"));
        assert!(out.contains("taskbridge_mailbox_passes_total{kind=\"listing\"} 0\n"));
        assert!(out.contains("taskbridge_reconciliations_total 7\n"));
        assert!(out.contains("taskbridge_publish_rounds_total 1\n"));
        assert!(out.contains("# TYPE taskbridge_streaming_connections gauge\n"));
        let types = out.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = out.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, 14);
        assert_eq!(helps, types);
    }
}
