//! Console accounts: a JSON file of names, roles, projects and Argon2id password hashes, written
//! by `taskbridge users` and read by the console at every sign-in (so a change needs no
//! restart).

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};

use crate::pm::ProjectGuid;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every project, every page.
    Admin,
    /// The listed projects only.
    Manager,
}

impl Role {
    /// The name used in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "manager" => Ok(Role::Manager),
            other => Err(UserError::Invalid(format!(
                "unknown role {other:?} (expected admin or manager)"
            ))),
        }
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The sign-in name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A manager's projects (ignored for admins).
    #[serde(default)]
    pub projects: Vec<ProjectGuid>,
    /// The password as an Argon2id PHC string; empty for accounts that sign in only through
    /// the reverse proxy's header.
    #[serde(default)]
    pub password_hash: String,
}

impl User {
    /// Whether this account may see and act on `project`.
    pub fn may_see(&self, project: ProjectGuid) -> bool {
        self.role == Role::Admin || self.projects.contains(&project)
    }

    /// Whether `password` is this account's.
    pub fn check_password(&self, password: &str) -> bool {
        let Ok(hash) = PasswordHash::new(&self.password_hash) else {
            return false;
        };
        PasswordVerifier::<PasswordHash>::verify_password(&hasher(), password.as_bytes(), &hash)
            .is_ok()
    }
}

/// Why the accounts file could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: not a valid accounts file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A request that cannot be carried out (unknown account, bad name, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Argon2id with the parameters of RFC 9106's second recommendation (64 MiB, 3 passes).
fn hasher() -> Argon2<'static> {
    let params = Params::new(64 * 1024, 3, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.chars().count() < 8 {
        return Err(UserError::Invalid(
            "a password needs at least 8 characters".into(),
        ));
    }
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    PasswordHasher::<PasswordHash>::hash_password_with_salt(&hasher(), password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Invalid(format!("hashing failed: {e}")))
}

/// The accounts file.
#[derive(Debug, Clone)]
pub struct UserStore {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct UserFile {
    users: Vec<User>,
}

impl UserStore {
    /// The store at `path` (which need not exist yet: then there are no accounts).
    pub fn new(path: impl Into<PathBuf>) -> UserStore {
        UserStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<User>, UserError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(UserError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: UserFile = serde_json::from_str(&text).map_err(|e| UserError::Parse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(file.users)
    }

    /// The account called `name`.
    pub fn get(&self, name: &str) -> Result<Option<User>, UserError> {
        Ok(self.list()?.into_iter().find(|u| u.name == name))
    }

    /// Adds `user`, refusing a name that is taken.
    pub fn add(&self, user: User) -> Result<(), UserError> {
        valid_name(&user.name)?;
        let mut users = self.list()?;
        if users.iter().any(|u| u.name == user.name) {
            return Err(UserError::Invalid(format!(
                "an account {:?} exists already (taskbridge users passwd changes its password)",
                user.name
            )));
        }
        users.push(user);
        self.write(users)
    }

    /// Removes the account `name`.
    pub fn remove(&self, name: &str) -> Result<(), UserError> {
        let mut users = self.list()?;
        let before = users.len();
        users.retain(|u| u.name != name);
        if users.len() == before {
            return Err(UserError::Invalid(format!("no account {name:?}")));
        }
        self.write(users)
    }

    /// Replaces the account `name` by what `change` makes of it.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut User)) -> Result<(), UserError> {
        let mut users = self.list()?;
        let user = users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| UserError::Invalid(format!("no account {name:?}")))?;
        change(user);
        self.write(users)
    }

    fn write(&self, mut users: Vec<User>) -> Result<(), UserError> {
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let text = serde_json::to_string_pretty(&UserFile { users })
            .map_err(|e| UserError::Invalid(format!("cannot write the accounts: {e}")))?;
        let io = |source| UserError::Io {
            path: self.path.clone(),
            source,
        };
        // Written beside and renamed, owner-only: the file holds password hashes.
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

fn valid_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UserError::Invalid(format!(
            "{name:?} is not an account name (letters, digits, . _ @ - only)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_stored_hashed_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = UserStore::new(dir.path().join("users.json"));
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        store
            .add(User {
                name: "mia".into(),
                role: Role::Manager,
                projects: vec![],
                password_hash: hash,
            })
            .expect("add");
        let text = std::fs::read_to_string(store.path()).expect("read");
        assert!(!text.contains("correct horse"));
        let mia = store.get("mia").expect("get").expect("mia");
        assert!(mia.check_password("correct horse"));
        assert!(!mia.check_password("correct horsf"));
        assert!(store.add(mia.clone()).is_err(), "a taken name");
        store.remove("mia").expect("remove");
        assert!(store.get("mia").expect("get").is_none());
        assert!(hash_password("short").is_err());
    }
}
