//! `taskbridge serve`: the standalone connector (listener, engine, admin endpoint with the PM
//! API) over the embedded PM store, until SIGTERM or Ctrl-C.
//!
//! Under systemd (`Type=notify`) it tells the service manager when it is ready (`READY=1`, once
//! the listener and the admin endpoint accept connections and the engine starts) and when it
//! stops (`STOPPING=1`), by a datagram to `$NOTIFY_SOCKET`. SIGHUP re-reads the configuration:
//! `sync.debounce_ms` and `sync.max_debounce_ms` are applied to the running engine; any other
//! changed key is logged as needing a restart (the listener, the EWS client and the rest of the
//! engine are built from the configuration at start).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracing::{info, warn};

use taskbridge::connector::{Connector, ConnectorConfig, PushListener};
use taskbridge::listener::{AdminConfig, ListenerConfig, ListenerSecret, TlsFiles};
use taskbridge::pm::AnyHost;
use taskbridge::pm::embedded::{WatchConfig, WebhookConfig, pm_api, run_watch_folder, run_webhook};
use taskbridge::secret::Secret;

use super::CliError;
use super::config::RawConfig;

/// Arguments of `taskbridge serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Watch DIR for plans (MSPDI or JSON): each one saved there is imported and published,
    /// and NAME.taskbridge.xml is written beside it once progress is applied. Overrides
    /// `[pm] watch_dir`.
    #[arg(long, value_name = "DIR")]
    pub watch: Option<std::path::PathBuf>,
}

/// The typed connector settings from the file.
pub fn connector_config(raw: &RawConfig) -> Result<ConnectorConfig, CliError> {
    raw.validate()?;
    let listener = if raw.push_listener() {
        let secret_path = raw.data_path(&raw.listener.secret_file);
        let secret = ListenerSecret::load_or_create(&secret_path).map_err(|e| {
            CliError::Usage(format!("invalid configuration: listener.secret_file: {e}"))
        })?;
        let url = reqwest::Url::parse(&raw.listener.public_url).map_err(|e| {
            CliError::Usage(format!("invalid configuration: listener.public_url: {e}"))
        })?;
        let mut config =
            ListenerConfig::new(raw.socket("listener.listen", &raw.listener.listen)?, secret);
        let path = url.path().trim_end_matches('/');
        config.path = if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        };
        config.max_body_bytes = raw.listener.max_body_bytes;
        config.limits.max_connections = raw.listener.max_connections;
        config.limits.max_connections_per_address = raw.listener.max_connections_per_address;
        if !raw.listener.tls_cert.is_empty() {
            config.tls = Some(TlsFiles {
                cert: raw.data_path(&raw.listener.tls_cert),
                key: raw.data_path(&raw.listener.tls_key),
            });
        }
        config
            .validate()
            .map_err(|e| CliError::Usage(format!("invalid configuration: listener: {e}")))?;
        Some(PushListener {
            config,
            public_url: raw.listener.public_url.clone(),
            status_frequency: Duration::from_secs(raw.listener.status_frequency_minutes * 60),
        })
    } else {
        None
    };
    Ok(ConnectorConfig {
        exchange: raw.exchange()?,
        table: raw.field_table()?,
        sync: raw.sync()?,
        state: raw.state_location()?,
        listener,
        admin: Some(AdminConfig::new(
            raw.socket("admin.listen", &raw.admin.listen)?,
        )),
    })
}

/// Sends `state` (e.g. `READY=1`) to the service manager when `$NOTIFY_SOCKET` names one; an
/// address starting with `@` is in the abstract namespace. Without the variable it does
/// nothing; a failure is logged, never fatal (readiness is a courtesy to systemd).
pub fn notify_service_manager(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&socket, state) {
        warn!(error = %e, socket = ?socket, "cannot notify the service manager");
    }
}

#[cfg(unix)]
fn send_notify(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    // A datagram to a local socket never waits on the peer; non-blocking keeps it so even
    // when the receiver's queue is full.
    sock.set_nonblocking(true)?;
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        _ => {
            sock.send_to(state.as_bytes(), std::path::Path::new(socket))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn send_notify(_socket: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

/// The keys (`section.key`) whose values differ between two configurations.
pub fn changed_keys(running: &RawConfig, reread: &RawConfig) -> Vec<String> {
    fn leaves(prefix: &str, t: &toml::Table, out: &mut std::collections::BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) if !t.is_empty() => leaves(&key, t, out),
                _ => {
                    out.insert(key, v.to_string());
                }
            }
        }
    }
    let (mut a, mut b) = (Default::default(), Default::default());
    if let (Ok(x), Ok(y)) = (
        toml::Table::try_from(running),
        toml::Table::try_from(reread),
    ) {
        leaves("", &x, &mut a);
        leaves("", &y, &mut b);
    }
    let keys: std::collections::BTreeSet<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    keys.into_iter().cloned().collect()
}

/// A re-read of the configuration (the same file, variables and `--data-dir` as at start).
pub type Reload = Box<dyn Fn() -> Result<RawConfig, CliError> + Send + Sync>;

/// The keys a running connector takes on SIGHUP.
pub const RELOADABLE: &[&str] = &["sync.debounce_ms", "sync.max_debounce_ms"];

/// On every SIGHUP: re-reads the configuration, hands the [`RELOADABLE`] keys to `apply`, and
/// logs the other changed keys as needing a restart; an invalid file is reported and the
/// running configuration kept.
#[cfg(unix)]
async fn on_hangup(
    mut running: RawConfig,
    reload: Reload,
    apply: impl Fn(&taskbridge::sync::SyncConfig) + Send,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let reread = match reload().and_then(|raw| raw.validate().map(|()| raw)) {
            Ok(raw) => raw,
            Err(e) => {
                warn!(error = %e, "SIGHUP: the configuration is not valid; the running one stays");
                continue;
            }
        };
        let changed = changed_keys(&running, &reread);
        if changed.is_empty() {
            info!("SIGHUP: configuration re-read, nothing changed");
            continue;
        }
        let (live, later): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| RELOADABLE.contains(&k.as_str()));
        if !live.is_empty()
            && let Ok(sync) = reread.sync()
        {
            apply(&sync);
            running.sync.debounce_ms = reread.sync.debounce_ms;
            running.sync.max_debounce_ms = reread.sync.max_debounce_ms;
            info!(applied = %live.join(", "), "SIGHUP: configuration re-read and applied");
        }
        if !later.is_empty() {
            warn!(
                changed = %later.join(", "),
                "SIGHUP: configuration re-read; these keys take effect only at a restart \
                 (systemctl restart taskbridge)"
            );
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    info!("shutting down: finishing work in progress");
}

/// An address already taken, said once, with the key that moves it; other errors as they are.
fn address_in_use_hint(e: taskbridge::connector::ConnectorError, raw: &RawConfig) -> anyhow::Error {
    use taskbridge::connector::ConnectorError;
    use taskbridge::listener::ListenerError;
    match &e {
        ConnectorError::Listener(ListenerError::Bind { addr, source })
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            let (key, var) = if raw.socket("admin.listen", &raw.admin.listen).ok() == Some(*addr) {
                ("admin.listen", "TASKBRIDGE_ADMIN_LISTEN")
            } else {
                ("listener.listen", "TASKBRIDGE_LISTENER_LISTEN")
            };
            anyhow::anyhow!(
                "cannot listen on {addr}: the address is already in use (another taskbridge \
                 serve, or another program); stop it, or set another port with {key} in the \
                 configuration or {var}"
            )
        }
        _ => e.into(),
    }
}

/// How often `/healthz` looks at the outcome of the latest Exchange calls.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// The admin API's bearer token, from `admin.token_file` (written by `taskbridge init`).
fn read_admin_token(raw: &RawConfig) -> Result<Secret, CliError> {
    let path = raw.data_path(&raw.admin.token_file);
    std::fs::read_to_string(&path)
        .map(|t| Secret::new(t.trim().to_string()))
        .map_err(|e| {
            CliError::Usage(format!(
                "invalid configuration: admin.token_file: cannot read {}: {e} (run taskbridge init)",
                path.display()
            ))
        })
}

/// Streaming with `exchange.url = "autodiscover"`: the known mailboxes' affinity groups from
/// Autodiscover's GroupingInformation, before the connector subscribes them.
async fn group_for_affinity<H: taskbridge::pm::PmHost>(raw: &RawConfig, connector: &Connector<H>) {
    use taskbridge::state::StateStore;
    let engine = connector.engine();
    let mailboxes: Vec<_> = match engine.state().mailboxes().await {
        Ok(states) => states.into_iter().filter_map(|s| s.mailbox).collect(),
        Err(e) => {
            warn!(error = %e, "cannot list the mailboxes to group them for server affinity");
            return;
        }
    };
    if let Some(keys) = super::autodiscover::affinity_groups(raw, &mailboxes).await {
        engine.set_affinity_groups(&keys);
    }
}

/// Runs `taskbridge serve`; `reload` re-reads the configuration on SIGHUP.
pub fn run(args: ServeArgs, raw: &RawConfig, reload: Reload) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(super::autodiscover::refresh(raw))?;
    let config = connector_config(raw)?;
    if let Some(redmine) = raw.redmine()? {
        return run_redmine(redmine, config, raw, reload);
    }
    super::config::refuse_if_readable_by_others(
        "admin.token_file",
        &raw.data_path(&raw.admin.token_file),
    )?;
    let watch_dir = args.watch.or_else(|| {
        (!raw.pm.watch_dir.is_empty()).then(|| std::path::PathBuf::from(&raw.pm.watch_dir))
    });
    let watch_zone: chrono_tz::Tz = raw.pm.watch_time_zone.parse().map_err(|_| {
        CliError::Usage(format!(
            "invalid configuration: pm.watch_time_zone: unknown time zone {:?}",
            raw.pm.watch_time_zone
        ))
    })?;
    if let Some(dir) = &watch_dir
        && !dir.is_dir()
    {
        return Err(CliError::Usage(format!(
            "the watch folder {} is not a directory",
            dir.display()
        ))
        .into());
    }
    let token = read_admin_token(raw)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let host = super::open_store(raw).await?;
        let connector = Connector::new(config, AnyHost::Embedded(host.clone()))?;
        group_for_affinity(raw, &connector).await;
        let api = pm_api(host.clone(), token)
            .with_conflicts(std::sync::Arc::new(connector.engine().clone()));
        let console =
            taskbridge::console::Console::new(host.clone(), raw.console()?, connector.readiness())
                .with_conflicts(std::sync::Arc::new(connector.engine().clone()))
                .with_sync_view(std::sync::Arc::new(connector.engine().clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Notices go out as the service account over the connector's own EWS client.
        let (console, notifier) = match raw.notices()? {
            Some(config) => {
                let notifier = taskbridge::exchange::notices::Notifier::new(
                    host.clone(),
                    connector.client().clone(),
                    config,
                );
                let console = console.with_decision_signal(notifier.waker());
                let mut rx = stop_rx.clone();
                let task = tokio::spawn(notifier.run(async move {
                    let _ = rx.changed().await;
                }));
                (console, Some(task))
            }
            None => (console, None),
        };
        let routes = console.mount(Some(taskbridge::listener::admin::fallback_from_service(
            api,
        )));
        let webhook = if raw.pm.webhook_url.is_empty() {
            None
        } else {
            let secret = std::fs::read_to_string(raw.data_path(&raw.pm.webhook_secret_file))
                .map(|s| Secret::new(s.trim().to_string()))
                .map_err(|e| {
                    CliError::Usage(format!(
                        "invalid configuration: pm.webhook_secret_file: {e}"
                    ))
                })?;
            let config = WebhookConfig::new(raw.pm.webhook_url.clone(), secret);
            let host = host.clone();
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = run_webhook(host, config, async move {
                    let _ = rx.changed().await;
                })
                .await
                {
                    warn!(error = %e, "webhook stopped");
                }
            }))
        };
        let watcher = watch_dir.map(|dir| {
            let mut config = WatchConfig::new(dir);
            config.import.time_zone = watch_zone;
            let host = host.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(run_watch_folder(host, config, async move {
                let _ = rx.changed().await;
            }))
        });
        // `/healthz` says degraded while every Exchange call fails (a wrong password, an
        // unreachable server), with the latest error from the log as the reason, and while
        // more than half of the mailboxes have a current error.
        let view = connector.engine().clone();
        let health = tokio::spawn(taskbridge::listener::health::watch_exchange_and(
            connector.client().clone(),
            connector.readiness(),
            HEALTH_INTERVAL,
            super::logs::last_error,
            move || {
                let view = view.clone();
                Box::pin(async move {
                    use taskbridge::console::sync_view::{SyncView, most_mailboxes_failing};
                    match view.health().await {
                        Ok(health) => most_mailboxes_failing(&health),
                        Err(e) => Some(format!("the sync state cannot be read: {e}")),
                    }
                })
            },
        ));
        #[cfg(unix)]
        let hangup = {
            let engine = connector.engine().clone();
            tokio::spawn(on_hangup(raw.clone(), reload, move |sync| {
                engine.set_debounce(sync.debounce, sync.max_debounce);
            }))
        };
        #[cfg(not(unix))]
        drop(reload);
        let result = connector
            .run(
                Some(routes),
                |bound| {
                    if let Some(a) = bound.listener {
                        eprintln!("listening for notifications on {a}");
                    }
                    if let Some(a) = bound.admin {
                        eprintln!(
                            "admin endpoint on http://{a} (/console/, /healthz, /metrics, /pm/...)"
                        );
                    }
                    notify_service_manager("READY=1");
                },
                async {
                    shutdown_signal().await;
                    notify_service_manager("STOPPING=1");
                },
            )
            .await;
        health.abort();
        #[cfg(unix)]
        hangup.abort();
        let _ = stop_tx.send(true);
        if let Some(w) = webhook {
            let _ = w.await;
        }
        if let Some(w) = watcher {
            let _ = w.await;
        }
        if let Some(n) = notifier {
            let _ = n.await;
        }
        host.close().await;
        result.map_err(|e| address_in_use_hint(e, raw))?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `taskbridge serve` over Redmine (`[pm] kind = "redmine"`): the connector, the
/// Redmine poller, `/healthz` degraded while Exchange or Redmine fails, and the PM API's
/// `/pm/updates…` and `/pm/conflicts…` (Redmine has no approval of its own: taskbridge keeps the
/// updates). Projects live in Redmine, so there is no watch folder, webhook or project route.
fn run_redmine(
    redmine: taskbridge::pm::redmine::RedmineConfig,
    config: ConnectorConfig,
    raw: &RawConfig,
    reload: Reload,
) -> anyhow::Result<ExitCode> {
    use taskbridge::pm::redmine::RedmineHost;
    super::config::refuse_if_readable_by_others(
        "admin.token_file",
        &raw.data_path(&raw.admin.token_file),
    )?;
    let token = read_admin_token(raw)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let host = RedmineHost::connect(redmine)?;
        let connector = Connector::new(config, AnyHost::Redmine(host.clone()))?;
        group_for_affinity(raw, &connector).await;
        let api = taskbridge::pm::embedded::pm_updates_api(std::sync::Arc::new(host.clone()), token)
            .with_conflicts(std::sync::Arc::new(connector.engine().clone()));
        let routes = taskbridge::listener::admin::fallback_from_service(api);
        let health = tokio::spawn(taskbridge::listener::health::watch_exchange(
            connector.client().clone(),
            connector.readiness(),
            HEALTH_INTERVAL,
            super::logs::last_error,
        ));
        let redmine_health = {
            let readiness = connector.readiness();
            let host = host.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEALTH_INTERVAL).await;
                    // Only this watcher's own reason is cleared; Exchange's stays.
                    match host.last_error() {
                        Some(e) => readiness.set_degraded(Some(format!("Redmine: {e}"))),
                        None if readiness
                            .degraded()
                            .is_some_and(|r| r.starts_with("Redmine: ")) =>
                        {
                            readiness.set_degraded(None);
                        }
                        None => {}
                    }
                }
            })
        };
        #[cfg(unix)]
        let hangup = {
            let engine = connector.engine().clone();
            tokio::spawn(on_hangup(raw.clone(), reload, move |sync| {
                engine.set_debounce(sync.debounce, sync.max_debounce);
            }))
        };
        #[cfg(not(unix))]
        drop(reload);
        let result = connector
            .run(
                Some(routes),
                |bound| {
                    if let Some(a) = bound.listener {
                        eprintln!("listening for notifications on {a}");
                    }
                    if let Some(a) = bound.admin {
                        eprintln!(
                            "admin endpoint on http://{a} (/healthz, /metrics, /pm/updates, /pm/conflicts)"
                        );
                    }
                    notify_service_manager("READY=1");
                },
                async {
                    shutdown_signal().await;
                    notify_service_manager("STOPPING=1");
                },
            )
            .await;
        health.abort();
        redmine_health.abort();
        #[cfg(unix)]
        hangup.abort();
        result.map_err(|e| address_in_use_hint(e, raw))?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn notify_reaches_a_path_and_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).expect("bind path");
        send_notify(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("taskbridge-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let abstract_socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send_notify(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = abstract_socket.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn changed_keys_names_only_what_differs() {
        let running = RawConfig::default();
        let mut reread = running.clone();
        assert!(changed_keys(&running, &reread).is_empty());
        reread.sync.debounce_ms = 5;
        reread.listener.listen = "127.0.0.1:9".into();
        assert_eq!(
            changed_keys(&running, &reread),
            vec![
                "listener.listen".to_string(),
                "sync.debounce_ms".to_string()
            ]
        );
    }
}
