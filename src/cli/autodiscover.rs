//! `[exchange] url = "autodiscover"`: the EWS URL found by Autodiscover instead of written in
//! the file, kept in `<data_dir>/autodiscover.json` so that a restart does not depend on
//! Autodiscover answering.
//!
//! The commands that talk to Exchange call [`refresh`] first: it looks the URL up when there is
//! none yet, when it is older than `autodiscover_cache_hours`, or when the address changed. If
//! the lookup fails and an older URL is known, that URL is used and the failure is logged with
//! every step tried; with no URL at all the command fails with those steps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use taskbridge::ews::autodiscover::{AutodiscoverSettings, discover};

use super::CliError;
use super::config::{RawConfig, bad};

/// The value of `exchange.url` that asks for Autodiscover.
pub const AUTODISCOVER: &str = "autodiscover";
/// The cache file, in the data directory.
pub const CACHE_FILE: &str = "autodiscover.json";

/// What the cache holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Found {
    /// The address looked up.
    address: String,
    /// The EWS URL found.
    ews_url: String,
    /// When.
    found_at: DateTime<Utc>,
}

/// The address whose EWS URL is looked up.
pub fn address(raw: &RawConfig) -> Result<String, CliError> {
    let x = &raw.exchange;
    let address = if x.autodiscover_address.trim().is_empty() {
        x.user.trim()
    } else {
        x.autodiscover_address.trim()
    };
    if address.contains('@') && !address.starts_with('@') && !address.ends_with('@') {
        Ok(address.to_string())
    } else {
        Err(bad(
            "exchange.autodiscover_address",
            "url = \"autodiscover\" needs an e-mail address to look up: set \
             autodiscover_address (or a user of the form name@domain)",
        ))
    }
}

fn read_cache(raw: &RawConfig) -> Result<Option<Found>, CliError> {
    let path = raw.data_path(CACHE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            bad(
                "exchange.url",
                format!(
                    "{} is damaged ({e}): delete it to look the URL up again",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(
            "exchange.url",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// The EWS URL Autodiscover found last for the configured address.
pub fn cached_url(raw: &RawConfig) -> Result<String, CliError> {
    let address = address(raw)?;
    match read_cache(raw)? {
        Some(found) if found.address.eq_ignore_ascii_case(&address) => Ok(found.ews_url),
        _ => Err(bad(
            "exchange.url",
            format!(
                "Autodiscover has not found an EWS URL for {address} yet: run `taskbridge \
                 check --autodiscover {address}` to see each step"
            ),
        )),
    }
}

/// Looks the EWS URL up when the configuration asks for Autodiscover and the cache is missing,
/// stale or for another address. Returns the URL used, if Autodiscover is configured.
pub async fn refresh(raw: &RawConfig) -> anyhow::Result<Option<String>> {
    let now = Utc::now();
    let x = &raw.exchange;
    if x.url != AUTODISCOVER {
        return Ok(None);
    }
    let address = address(raw)?;
    let cached = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || read_cache(&raw)).await??
    }
    .filter(|f| f.address.eq_ignore_ascii_case(&address));
    let max_age = chrono::Duration::hours(
        i64::try_from(x.autodiscover_cache_hours).unwrap_or(i64::MAX / 3_600_000),
    );
    if let Some(found) = &cached
        && now.signed_duration_since(found.found_at) < max_age
    {
        return Ok(Some(found.ews_url.clone()));
    }
    // The credentials and TLS settings of EWS itself; Exchange asks for the same ones.
    let ews = raw.exchange_for_autodiscover()?;
    let mut settings = AutodiscoverSettings::new(ews.auth);
    settings.tls = ews.tls;
    settings.step_timeout = Duration::from_secs(x.autodiscover_timeout_secs.max(1));
    if !x.autodiscover_url.trim().is_empty() {
        settings.start_urls = vec![x.autodiscover_url.trim().to_string()];
    }
    match discover(&address, &settings).await {
        Ok(discovery) => {
            let found = Found {
                address: address.clone(),
                ews_url: discovery.ews_url.clone(),
                found_at: now,
            };
            let path = raw.data_path(CACHE_FILE);
            let text = serde_json::to_vec_pretty(&found)?;
            tokio::fs::write(&path, text)
                .await
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            info!(address = %address, ews_url = %found.ews_url, steps = discovery.attempts.len(), "Autodiscover found the EWS URL");
            Ok(Some(found.ews_url))
        }
        Err(e) => {
            let steps: Vec<String> = e
                .attempts()
                .iter()
                .map(|a| format!("{} {} -> {}", a.method, a.url, a.result))
                .collect();
            match cached {
                Some(found) => {
                    warn!(address = %address, ews_url = %found.ews_url, error = %e, steps = ?steps,
                        "Autodiscover failed; using the EWS URL it found before");
                    Ok(Some(found.ews_url))
                }
                None => Err(anyhow::anyhow!(
                    "exchange.url = \"autodiscover\": {e}\n  {}",
                    steps.join("\n  ")
                )),
            }
        }
    }
}
