//! `taskbridge serve`: the standalone connector (listener, engine, admin endpoint with the PM
//! API) over the embedded PM store, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracing::{info, warn};

use taskbridge::connector::{Connector, ConnectorConfig, PushListener};
use taskbridge::listener::{AdminConfig, ListenerConfig, ListenerSecret, TlsFiles};
use taskbridge::pm::embedded::{
    EmbeddedHost, WatchConfig, WebhookConfig, pm_api, run_watch_folder, run_webhook,
};
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
    let listener = if raw.listener.enabled {
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
        state_path: raw.data_path("state.sqlite"),
        listener,
        admin: Some(AdminConfig::new(
            raw.socket("admin.listen", &raw.admin.listen)?,
        )),
    })
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

/// Runs `taskbridge serve`.
pub fn run(args: ServeArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    let config = connector_config(raw)?;
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
    let token = std::fs::read_to_string(raw.data_path(&raw.admin.token_file))
        .map(|t| Secret::new(t.trim().to_string()))
        .map_err(|e| {
            CliError::Usage(format!(
                "invalid configuration: admin.token_file: cannot read {}: {e} (run taskbridge init)",
                raw.data_path(&raw.admin.token_file).display()
            ))
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let host = EmbeddedHost::open(&raw.data_dir).await?;
        let connector = Connector::new(config, host.clone())?;
        let api = pm_api(host.clone(), token)
            .with_conflicts(std::sync::Arc::new(connector.engine().clone()));
        let routes = taskbridge::listener::admin::fallback_from_service(api);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
        let result = connector
            .run(
                Some(routes),
                |bound| {
                    if let Some(a) = bound.listener {
                        eprintln!("listening for notifications on {a}");
                    }
                    if let Some(a) = bound.admin {
                        eprintln!("admin endpoint on http://{a} (/healthz, /metrics, /pm/...)");
                    }
                },
                shutdown_signal(),
            )
            .await;
        let _ = stop_tx.send(true);
        if let Some(w) = webhook {
            let _ = w.await;
        }
        if let Some(w) = watcher {
            let _ = w.await;
        }
        host.close().await;
        result?;
        Ok(ExitCode::SUCCESS)
    })
}
