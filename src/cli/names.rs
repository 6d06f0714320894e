//! Names people type: a project by GUID, unique GUID prefix or exact name; updates and
//! conflicts by a unique prefix of their id, as git takes commits; and the short ids printed.

use taskbridge::pm::ProjectGuid;
use taskbridge::pm::embedded::{EmbeddedHost, ProjectSummary};

use super::CliError;

/// The fewest characters of an id printed for people (git prints 7 of a hash; a UUID's first
/// 8 are its first group).
pub const SHORT_ID: usize = 8;

/// The project `name` names: its GUID, a prefix of exactly one project's GUID, or exactly one
/// project's name (case-insensitively when no name matches exactly). Anything else is a usage
/// error: "unknown project", with the closest names, or "ambiguous", with the candidates.
pub async fn project(host: &EmbeddedHost, name: &str) -> anyhow::Result<ProjectGuid> {
    // A stored project's whole GUID names it whatever the list holds (a GUID match wins over
    // names, and a whole GUID matches one project): found without the summaries, which count
    // every project's rows (6-8 % of the instructions of an unchanged publish of 10,000).
    if let Ok(guid) = name.parse::<ProjectGuid>()
        && host.project_guids().await?.contains(&guid)
    {
        return Ok(guid);
    }
    let projects = host.project_summaries().await?;
    Ok(resolve_project(&projects, name)?)
}

/// [`project`] over a list already read.
pub fn resolve_project(projects: &[ProjectSummary], name: &str) -> Result<ProjectGuid, CliError> {
    let wanted = name.trim();
    let exact: Vec<&ProjectSummary> = projects.iter().filter(|p| p.name == wanted).collect();
    let by_name = if exact.is_empty() {
        projects
            .iter()
            .filter(|p| p.name.to_lowercase() == wanted.to_lowercase())
            .collect()
    } else {
        exact
    };
    let lower = wanted.to_ascii_lowercase();
    let by_guid: Vec<&ProjectSummary> = if lower.is_empty() {
        Vec::new()
    } else {
        projects
            .iter()
            .filter(|p| p.guid.to_string().starts_with(&lower))
            .collect()
    };
    let candidates = match (by_guid.len(), by_name.len()) {
        (1, _) => return Ok(by_guid[0].guid),
        (0, 1) => return Ok(by_name[0].guid),
        (0, 0) => {
            let close = closest(wanted, projects.iter().map(|p| p.name.as_str()));
            let hint = if close.is_empty() {
                " (list them with `taskbridge projects`)".to_string()
            } else {
                format!("; closest: {}", quoted(&close))
            };
            return Err(CliError::Usage(format!("unknown project {wanted:?}{hint}")));
        }
        (0, _) => by_name,
        _ => by_guid,
    };
    Err(CliError::Usage(format!(
        "{wanted:?} names {} projects: {}; give more of the GUID",
        candidates.len(),
        candidates
            .iter()
            .map(|p| format!("{} ({})", short(&p.guid.to_string()), p.name))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The one id of `ids` that equals `typed` or starts with it; `what` names the kind in errors
/// ("update", "conflict"), `list` the command that lists them.
pub fn by_prefix<'a>(
    what: &str,
    list: &str,
    typed: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<&'a str, CliError> {
    let typed = typed.trim();
    let ids: Vec<&str> = ids.into_iter().collect();
    if let Some(id) = ids.iter().find(|id| id.eq_ignore_ascii_case(typed)) {
        return Ok(id);
    }
    let lower = typed.to_ascii_lowercase();
    let matching: Vec<&str> = if typed.is_empty() {
        Vec::new()
    } else {
        ids.iter()
            .copied()
            .filter(|id| id.to_ascii_lowercase().starts_with(&lower))
            .collect()
    };
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::Usage(format!(
            "unknown {what} {typed:?} (run `{list}` to list them)"
        ))),
        many => Err(CliError::Usage(format!(
            "{typed:?} is the start of {} {what}s ({}); type more of the id",
            many.len(),
            many.iter()
                .map(|id| short(id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The first [`SHORT_ID`] characters of `id`.
pub fn short(id: &str) -> String {
    id.chars().take(SHORT_ID).collect()
}

/// The shortest prefixes (at least [`SHORT_ID`] characters) that tell each of `ids` apart.
pub fn short_ids<'a>(ids: impl IntoIterator<Item = &'a str> + Clone) -> Vec<String> {
    let all: Vec<&str> = ids.into_iter().collect();
    all.iter()
        .map(|id| {
            let mut n = SHORT_ID.min(id.len());
            while n < id.len()
                && all
                    .iter()
                    .any(|other| other != id && other.get(..n) == id.get(..n))
            {
                n += 1;
            }
            id.get(..n).unwrap_or(id).to_string()
        })
        .collect()
}

/// Up to three of `names` closest to `typed`: those containing it, then by edit distance within
/// a third of its length (at least 3).
pub fn closest<'a>(typed: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let t = typed.to_lowercase();
    let limit = (t.chars().count() / 3).max(3);
    let mut scored: Vec<(usize, &str)> = names
        .into_iter()
        .filter_map(|name| {
            let n = name.to_lowercase();
            if !t.is_empty() && (n.contains(&t) || t.contains(&n)) {
                return Some((0, name));
            }
            // A name typed short and slightly wrong ("harbor") is close to the start of one.
            let start: String = n.chars().take(t.chars().count()).collect();
            let d = distance(&t, &n).min(distance(&t, &start) + 1);
            (d <= limit).then_some((d, name))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_whole_guid_names_its_project_and_anything_else_goes_by_the_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = EmbeddedHost::open(dir.path()).await.expect("open");
        let guid = ProjectGuid(uuid::Uuid::from_u128(0x5b0c_7f3e));
        let plan = taskbridge::pm::Project {
            guid,
            name: "Office Move".into(),
            time_zone: chrono_tz::Tz::UTC,
            minutes_per_day: 480,
            minutes_per_week: 2400,
            start: None,
            tasks: Vec::new(),
            resources: Vec::new(),
            assignments: Vec::new(),
        };
        host.import(plan).await.expect("import");
        for typed in [
            guid.to_string(),
            guid.to_string().to_uppercase(),
            format!("{{{guid}}}"),
            "Office Move".to_string(),
            "office move".to_string(),
            guid.to_string()[..8].to_string(),
        ] {
            assert_eq!(project(&host, &typed).await.ok(), Some(guid), "{typed}");
        }
        let other = ProjectGuid(uuid::Uuid::from_u128(7)).to_string();
        let err = project(&host, &other).await.expect_err("not stored");
        assert!(err.to_string().contains("unknown project"), "{err}");
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let ids = ["4f1c2a30-aaaa", "4f1c9b00-bbbb", "77aa0000-cccc"];
        assert_eq!(
            by_prefix("update", "x", "77", ids).unwrap(),
            "77aa0000-cccc"
        );
        assert_eq!(
            by_prefix("update", "x", "4F1C2", ids).unwrap(),
            "4f1c2a30-aaaa"
        );
        let e = by_prefix("update", "taskbridge updates", "4f1c", ids).unwrap_err();
        assert!(e.to_string().contains("start of 2 updates"), "{e}");
        let e = by_prefix("update", "taskbridge updates", "9", ids).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown update \"9\" (run `taskbridge updates` to list them)"
        );
    }

    #[test]
    fn short_ids_grow_until_they_differ() {
        let ids = ["abcdefgh1", "abcdefgh2", "12345678x"];
        assert_eq!(short_ids(ids), vec!["abcdefgh1", "abcdefgh2", "12345678"]);
    }

    #[test]
    fn closest_names_come_first() {
        let names = ["Harbour Bridge Refit", "Office Move", "Harbor Survey"];
        assert_eq!(
            closest("harbour", names),
            vec!["Harbour Bridge Refit", "Harbor Survey"]
        );
        assert_eq!(
            closest("harbor", names),
            vec!["Harbor Survey", "Harbour Bridge Refit"]
        );
        assert_eq!(closest("Ofice Move", names), vec!["Office Move"]);
        assert!(closest("zzzzzz", names).is_empty());
    }
}
