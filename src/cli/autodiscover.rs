//! `[exchange] url = "autodiscover"`: the EWS URL found by Autodiscover instead of written in
//! the file, kept in `<data_dir>/autodiscover.json` so that a restart does not depend on
//! Autodiscover answering.
//!
//! The commands that talk to Exchange call [`refresh`] first: it looks the URL up when there is
//! none yet, when it is older than `autodiscover_cache_hours`, or when the address changed. If
//! the lookup fails and an older URL is known, that URL is used and the failure is logged with
//! every step tried; with no URL at all the command fails with those steps.
//!
//! In streaming mode `serve` also asks SOAP Autodiscover (GetUserSettings) for every known
//! mailbox's `GroupingInformation` ([`affinity_groups`]), so that the subscriptions of one
//! group are anchored on one Mailbox server; kept in `<data_dir>/autodiscover-groups.json` as
//! long as the URL. A failure or time-out falls back to the older groups, or to none (each
//! subscription anchored on its own mailbox, connections grouped by the backend cookies), with
//! a WARN.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use taskbridge::ews::autodiscover::{AutodiscoverSettings, discover, soap_url_of, user_groupings};
use taskbridge::state::MailboxAddress;

use super::config::{
    AUTODISCOVER, AffinityGroupsFound, AutodiscoverFound, CACHE_FILE, GROUPS_CACHE_FILE,
    ListenerMode, RawConfig,
};

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
    let settings = autodiscover_settings(raw)?;
    match discover(&address, &settings).await {
        Ok(discovery) => {
            let found = AutodiscoverFound {
                address: address.clone(),
                ews_url: discovery.ews_url.clone(),
                autodiscover_url: Some(discovery.autodiscover_url.clone()),
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

/// The Autodiscover settings of the configuration.
fn autodiscover_settings(raw: &RawConfig) -> anyhow::Result<AutodiscoverSettings> {
    let x = &raw.exchange;
    // The credentials and TLS settings of EWS itself; Exchange asks for the same ones.
    let ews = raw.exchange_for_autodiscover()?;
    let mut settings = AutodiscoverSettings::new(ews.auth);
    settings.tls = ews.tls;
    settings.step_timeout = Duration::from_secs(x.autodiscover_timeout_secs.max(1));
    if !x.autodiscover_url.trim().is_empty() {
        settings.start_urls = vec![x.autodiscover_url.trim().to_string()];
    }
    Ok(settings)
}

/// The server-affinity group key of each of `mailboxes` (GroupingInformation joined with the
/// EWS URL), when the configuration uses Autodiscover and streaming notifications; `None`
/// otherwise, or when neither Autodiscover nor the cache gives any (logged with a WARN: the
/// subscriptions are then anchored on their own mailboxes, as without Autodiscover).
pub async fn affinity_groups(
    raw: &RawConfig,
    mailboxes: &[MailboxAddress],
) -> Option<HashMap<MailboxAddress, String>> {
    let x = &raw.exchange;
    if x.url != AUTODISCOVER
        || !matches!(raw.listener_mode(), Ok(ListenerMode::Streaming))
        || mailboxes.is_empty()
    {
        return None;
    }
    let path = raw.data_path(GROUPS_CACHE_FILE);
    let cached: Option<AffinityGroupsFound> = tokio::fs::read(&path)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let now = Utc::now();
    let max_age = chrono::Duration::hours(
        i64::try_from(x.autodiscover_cache_hours).unwrap_or(i64::MAX / 3_600_000),
    );
    let wanted: Vec<String> = mailboxes
        .iter()
        .map(|m| m.as_str().to_ascii_lowercase())
        .collect();
    if let Some(found) = &cached
        && now.signed_duration_since(found.found_at) < max_age
        && wanted.iter().all(|m| found.groups.contains_key(m))
    {
        return Some(keys_of(found, mailboxes));
    }
    match lookup_groups(raw, &wanted).await {
        Ok(groups) => {
            let found = AffinityGroupsFound {
                groups,
                found_at: now,
            };
            match serde_json::to_vec_pretty(&found) {
                Ok(text) => {
                    if let Err(e) = tokio::fs::write(&path, text).await {
                        warn!(path = %path.display(), error = %e, "cannot write the affinity-group cache");
                    }
                }
                Err(e) => warn!(error = %e, "cannot write the affinity-group cache"),
            }
            info!(
                mailboxes = found.groups.len(),
                "Autodiscover gave the mailboxes' GroupingInformation"
            );
            Some(keys_of(&found, mailboxes))
        }
        Err(e) => match cached {
            Some(found) => {
                warn!(error = %e, "GroupingInformation not found by Autodiscover; using the groups found before");
                Some(keys_of(&found, mailboxes))
            }
            None => {
                warn!(error = %e, "GroupingInformation not found by Autodiscover; each streaming subscription is anchored on its own mailbox");
                None
            }
        },
    }
}

/// Asks SOAP Autodiscover (the service beside the URL that found the EWS URL, else the
/// configured `autodiscover_url`) for the grouping keys of `mailboxes`.
async fn lookup_groups(
    raw: &RawConfig,
    mailboxes: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let known = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || raw.autodiscover_cache()).await??
    }
    .and_then(|f| f.autodiscover_url);
    let configured = raw.exchange.autodiscover_url.trim();
    let url = match known {
        Some(url) => soap_url_of(&url),
        None if !configured.is_empty() => soap_url_of(configured),
        None => anyhow::bail!(
            "the Autodiscover URL that found the EWS URL is not known yet (found before this \
             version) and exchange.autodiscover_url is not set"
        ),
    };
    let settings = autodiscover_settings(raw)?;
    // Each request has the step time-out; the whole lookup a bound of its own, so that a
    // slow server cannot hold the start-up for long.
    let batches = mailboxes
        .len()
        .div_ceil(taskbridge::ews::autodiscover::MAX_USERS_PER_REQUEST);
    let bound = settings.step_timeout * u32::try_from(batches).unwrap_or(u32::MAX).max(1);
    let found = tokio::time::timeout(bound, user_groupings(&url, mailboxes, &settings))
        .await
        .map_err(|_| anyhow::anyhow!("GetUserSettings at {url} timed out after {bound:?}"))?
        .map_err(|e| {
            let steps: Vec<String> = e
                .attempts()
                .iter()
                .map(|a| format!("{} {} -> {}", a.method, a.url, a.result))
                .collect();
            anyhow::anyhow!("{e}: {}", steps.join("; "))
        })?;
    // A mailbox without GroupingInformation is kept with an empty key: asked, not grouped.
    Ok(found
        .into_iter()
        .map(|g| (g.address.to_ascii_lowercase(), g.key().unwrap_or_default()))
        .collect())
}

/// The keys of `mailboxes` that the cache holds.
fn keys_of(
    found: &AffinityGroupsFound,
    mailboxes: &[MailboxAddress],
) -> HashMap<MailboxAddress, String> {
    mailboxes
        .iter()
        .filter_map(|m| {
            let key = found.groups.get(&m.as_str().to_ascii_lowercase())?;
            (!key.is_empty()).then(|| (m.clone(), key.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration asking Autodiscover at a server that accepts connections and never
    /// answers (the classic time-out), in streaming mode.
    fn silent_site(dir: &std::path::Path, port: u16) -> RawConfig {
        let mut raw = RawConfig {
            data_dir: dir.to_path_buf(),
            ..RawConfig::default()
        };
        raw.exchange.url = AUTODISCOVER.into();
        raw.exchange.auth = "none".into();
        raw.exchange.autodiscover_address = "ann@example.com".into();
        raw.exchange.autodiscover_url =
            format!("http://127.0.0.1:{port}/autodiscover/autodiscover.svc");
        raw.exchange.autodiscover_timeout_secs = 1;
        raw.listener.mode = "streaming".into();
        raw
    }

    #[tokio::test]
    async fn a_time_out_falls_back_to_the_groups_found_before_or_to_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Connections are queued by the kernel and never answered.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let raw = silent_site(dir.path(), port);
        let ann = MailboxAddress::new("ann@example.com");
        let mailboxes = vec![ann.clone()];

        // Nothing found before: no groups (each subscription anchored on its own mailbox).
        assert_eq!(affinity_groups(&raw, &mailboxes).await, None);

        // Groups found two days ago: stale, looked up again, the time-out keeps the old ones.
        let old = AffinityGroupsFound {
            groups: [(
                "ann@example.com".to_string(),
                "MBX01|https://ews".to_string(),
            )]
            .into(),
            found_at: Utc::now() - chrono::Duration::hours(48),
        };
        std::fs::write(
            raw.data_path(GROUPS_CACHE_FILE),
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("write cache");
        let found = affinity_groups(&raw, &mailboxes)
            .await
            .expect("the old groups");
        assert_eq!(
            found.get(&ann).map(String::as_str),
            Some("MBX01|https://ews")
        );

        // Not streaming: not asked at all.
        let mut push = raw.clone();
        push.listener.mode = "push".into();
        assert_eq!(affinity_groups(&push, &mailboxes).await, None);
        drop(silent);
    }
}
