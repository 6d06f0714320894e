//! `[exchange] url = "autodiscover"`: the EWS URL found by Autodiscover instead of written in
//! the file, kept in `<data_dir>/autodiscover.json` so that a restart does not depend on
//! Autodiscover answering.
//!
//! The commands that talk to Exchange call [`refresh`] first: it looks the URL up when there is
//! none yet, when it is older than `autodiscover_cache_hours`, or when the address changed. If
//! the lookup fails and an older URL is known, that URL is used and the failure is logged with
//! every step tried; with no URL at all the command fails with those steps.

use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use taskbridge::ews::autodiscover::{AutodiscoverSettings, discover};

use super::config::{AUTODISCOVER, AutodiscoverFound, CACHE_FILE, RawConfig};

/// Looks the EWS URL up when the configuration asks for Autodiscover and the cache is missing,
/// stale or for another address. Returns the URL used, if Autodiscover is configured.
pub async fn refresh(raw: &RawConfig) -> anyhow::Result<Option<String>> {
    let now = Utc::now();
    let x = &raw.exchange;
    if x.url != AUTODISCOVER {
        return Ok(None);
    }
    let address = raw.autodiscover_address()?;
    let cached = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || raw.autodiscover_cache()).await??
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
            let found = AutodiscoverFound {
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
