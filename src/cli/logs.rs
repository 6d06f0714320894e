//! The command line's logging: the filter, colour only on a terminal, and repeated warnings
//! folded into one line with a count.
//!
//! A wrong password makes every call fail the same way; logging each would bury everything
//! else (a publish to three mailboxes said the same 401 three times, a server every pass). The
//! first occurrence of a warning is logged; the same warning again (mailbox addresses aside)
//! within [`REPEAT_WINDOW`] is counted instead, and the count is logged when the warning comes
//! back after the window or when the command ends ([`flush_repeats`]). The text of the latest
//! warning's `error` field is kept for `/healthz` ([`last_error`]). While a progress bar is
//! drawn, log lines are written above it ([`set_bar`]), never glued onto it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::{CliError, LogFormat};

/// How long a repeated warning stays folded before it is logged again with its count.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// The target of the count lines, which are never folded themselves.
const REPEAT_TARGET: &str = "taskbridge::repeated";

/// Whether `stream_is_terminal` output gets colour: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (no-color.org).
pub fn colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the subscriber: `filter` (directives are `target=level` pairs and a bare default
/// level, `Targets`: what operators set, without the regex engine that full `EnvFilter`
/// syntax would add to every build), the repeat folding, and the formatter on stderr.
pub fn init(format: LogFormat, filter: &str) -> Result<(), CliError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let targets: tracing_subscriber::filter::Targets = filter
        .parse()
        .map_err(|e| CliError::Usage(format!("invalid --log filter {filter:?}: {e}")))?;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| AroundBar(Vec::new()))
        .with_ansi(colour(std::io::stderr().is_terminal()));
    let result = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(targets)
            .with(FoldRepeats)
            .with(layer)
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(targets)
            .with(FoldRepeats)
            .with(layer.json())
            .try_init(),
    };
    // A second init (tests that call `run` twice) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// The progress bar on stderr while one is drawn (`publish` on a terminal): log lines are
/// written above it instead of onto it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Makes log lines go above `bar` until [`clear_bar`].
pub fn set_bar(bar: &indicatif::ProgressBar) {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
}

/// Log lines go straight to stderr again.
pub fn clear_bar() {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// One log line, collected and written whole when dropped: above the progress bar when one is
/// drawn, straight to stderr otherwise.
struct AroundBar(Vec<u8>);

impl std::io::Write for AroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for AroundBar {
    fn drop(&mut self) {
        use std::io::Write;
        let line = std::mem::take(&mut self.0);
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let write = || {
            let _ = std::io::stderr().lock().write_all(&line);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// A warning's identity for folding: where it comes from, its message and its error, with
/// mailbox addresses taken out (the same 401 for three mailboxes is one problem).
#[derive(Default)]
struct Fields {
    message: String,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" => self.error = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                self.message.clear();
                let _ = write!(self.message, "{value:?}");
            }
            "error" => {
                let mut text = String::new();
                let _ = write!(text, "{value:?}");
                self.error = Some(text);
            }
            _ => {}
        }
    }
}

/// Replaces every word holding an `@` (a mailbox address) with `<mailbox>`.
fn without_addresses(text: &str) -> String {
    text.split(' ')
        .map(|w| if w.contains('@') { "<mailbox>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Repeat {
    first: Instant,
    message: String,
    folded: u64,
}

#[derive(Default)]
struct FoldState {
    seen: HashMap<String, Repeat>,
    last_error: Option<String>,
}

static FOLD: Mutex<Option<FoldState>> = Mutex::new(None);

fn with_state<T>(f: impl FnOnce(&mut FoldState) -> T) -> T {
    let mut guard = FOLD.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(FoldState::default))
}

/// The error text of the latest warning or error logged, mailbox addresses included.
pub fn last_error() -> Option<String> {
    with_state(|s| s.last_error.clone())
}

/// Logs the count of every warning folded since it was last logged.
pub fn flush_repeats() {
    let pending: Vec<(String, u64)> = with_state(|s| {
        s.seen
            .values_mut()
            .filter(|r| r.folded > 0)
            .map(|r| (r.message.clone(), std::mem::take(&mut r.folded)))
            .collect()
    });
    for (message, n) in pending {
        tracing::warn!(target: REPEAT_TARGET, "the warning \"{message}\" was repeated {n} more time{}", plural(n));
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The layer that folds repeated warnings (see the module documentation).
struct FoldRepeats;

impl<S: Subscriber> Layer<S> for FoldRepeats {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == REPEAT_TARGET {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = format!(
            "{}\u{0}{}\u{0}{}",
            meta.target(),
            fields.message,
            without_addresses(fields.error.as_deref().unwrap_or(""))
        );
        let now = Instant::now();
        let (log, folded_before) = with_state(|s| {
            if let Some(e) = &fields.error {
                s.last_error = Some(e.clone());
            }
            match s.seen.get_mut(&key) {
                Some(r) if now.duration_since(r.first) < REPEAT_WINDOW => {
                    r.folded += 1;
                    (false, 0)
                }
                Some(r) => {
                    r.first = now;
                    (true, std::mem::take(&mut r.folded))
                }
                None => {
                    s.seen.insert(
                        key,
                        Repeat {
                            first: now,
                            message: fields.message.clone(),
                            folded: 0,
                        },
                    );
                    (true, 0)
                }
            }
        });
        if folded_before > 0 {
            // Logged before this one, so that the count reads as the history of what follows.
            tracing::warn!(
                target: REPEAT_TARGET,
                "the next warning was repeated {folded_before} time{} in the last {} minutes",
                plural(folded_before),
                REPEAT_WINDOW.as_secs() / 60
            );
        }
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects the messages of the events that get through.
    struct Collect(std::sync::Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Collect {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let line = match fields.error {
                Some(e) => format!("{} error={e}", fields.message),
                None => fields.message,
            };
            self.0.lock().expect("lock").push(line);
        }
    }

    #[test]
    fn the_same_warning_for_three_mailboxes_is_logged_once_then_counted() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(FoldRepeats)
            .with(Collect(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for mailbox in ["ann@example.com", "bob@example.com", "chen@example.com"] {
                tracing::warn!(
                    error = %format!("mailbox {mailbox}: the server refused the credentials (HTTP 401)"),
                    "test: mailbox unavailable"
                );
            }
            tracing::warn!(error = "HTTP 500", "test: mailbox unavailable");
            tracing::info!("test: an info line is never folded");
            tracing::info!("test: an info line is never folded");
            flush_repeats();
        });
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            vec![
                "test: mailbox unavailable error=mailbox ann@example.com: the server refused the credentials (HTTP 401)".to_string(),
                "test: mailbox unavailable error=HTTP 500".to_string(),
                "test: an info line is never folded".to_string(),
                "test: an info line is never folded".to_string(),
                "the warning \"test: mailbox unavailable\" was repeated 2 more times".to_string(),
            ]
        );
        assert_eq!(last_error().as_deref(), Some("HTTP 500"));
    }

    #[test]
    fn addresses_are_taken_out_of_the_key() {
        assert_eq!(
            without_addresses("mailbox ann@example.com: authentication failed (HTTP 401)"),
            "mailbox <mailbox> authentication failed (HTTP 401)"
        );
    }
}
