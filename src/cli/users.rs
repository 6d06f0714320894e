//! `taskbridge users`: the web console's accounts (admins and status managers).
//!
//! The password is read from standard input: typed at a terminal without echo, or the first
//! line of a pipe (`echo "$PW" | taskbridge users add ...`), never from the command line, where
//! other users could read it in the process list.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use taskbridge::console::{Role, User, UserStore, users::hash_password};

use super::config::RawConfig;
use super::{CliError, names, open_existing_store, print_out, runtime, to_json};

/// Arguments of `taskbridge users`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsersArgs {
    /// What to do; without one, list the accounts.
    #[command(subcommand)]
    pub command: Option<UsersCommand>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `taskbridge users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account; the password is read from standard input.
    Add {
        /// The sign-in name.
        name: String,
        /// admin (every project) or manager (the projects named with --project).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A project the manager approves updates of: GUID, unique GUID prefix or name.
        /// Repeatable; replaces the list when given with `passwd`.
        #[arg(long = "project", value_name = "P")]
        projects: Vec<String>,
        /// No password: the account signs in only through the reverse proxy's header
        /// (`ui.trusted_user_header`).
        #[arg(long)]
        no_password: bool,
    },
    /// Remove an account.
    Remove {
        /// The sign-in name.
        name: String,
    },
    /// Set an account's password (read from standard input), and optionally its role or
    /// projects.
    Passwd {
        /// The sign-in name.
        name: String,
        /// A new role.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// The manager's projects (replace the list).
        #[arg(long = "project", value_name = "P")]
        projects: Vec<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: taskbridge::console::UserError| e.to_string())
}

/// Runs `taskbridge users`.
pub fn run(args: UsersArgs, raw: &RawConfig) -> anyhow::Result<ExitCode> {
    let config = raw.console()?;
    let store = UserStore::new(config.users_file);
    match args.command {
        None => {
            let users = store.list()?;
            if args.json {
                let shown: Vec<serde_json::Value> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "name": u.name, "role": u.role, "projects": u.projects,
                            "password": !u.password_hash.is_empty(),
                        })
                    })
                    .collect();
                return print_out(&to_json(&shown)?).map(|()| ExitCode::SUCCESS);
            }
            if users.is_empty() {
                eprintln!(
                    "no console accounts (add one with taskbridge users add NAME --role admin)"
                );
            }
            let mut out = String::new();
            for u in &users {
                let projects: Vec<String> = u.projects.iter().map(|p| p.to_string()).collect();
                out.push_str(&format!(
                    "{}\t{}\t{}\n",
                    u.name,
                    u.role.as_str(),
                    if u.role == Role::Admin {
                        "all projects".to_string()
                    } else {
                        projects.join(",")
                    }
                ));
            }
            print_out(&out)?;
        }
        Some(UsersCommand::Add {
            name,
            role,
            projects,
            no_password,
        }) => {
            let projects = resolve_projects(raw, role, &projects)?;
            let password_hash = if no_password {
                String::new()
            } else {
                hash_password(&read_password(&name)?)?
            };
            store.add(User {
                name: name.clone(),
                role,
                projects,
                password_hash,
            })?;
            eprintln!("account {name} added ({})", role.as_str());
        }
        Some(UsersCommand::Remove { name }) => {
            store.remove(&name)?;
            eprintln!("account {name} removed");
        }
        Some(UsersCommand::Passwd {
            name,
            role,
            projects,
        }) => {
            let current = store
                .get(&name)?
                .ok_or_else(|| CliError::Usage(format!("no account {name:?}")))?;
            let role = role.unwrap_or(current.role);
            let projects = if projects.is_empty() {
                None
            } else {
                Some(resolve_projects(raw, role, &projects)?)
            };
            let hash = hash_password(&read_password(&name)?)?;
            store.update(&name, move |u| {
                u.password_hash = hash;
                u.role = role;
                if let Some(p) = projects {
                    u.projects = p;
                }
            })?;
            eprintln!("account {name} changed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve_projects(
    raw: &RawConfig,
    role: Role,
    typed: &[String],
) -> anyhow::Result<Vec<taskbridge::pm::ProjectGuid>> {
    if role == Role::Manager && typed.is_empty() {
        return Err(CliError::Usage(
            "a manager needs at least one --project (the projects whose updates they decide)"
                .into(),
        )
        .into());
    }
    if typed.is_empty() {
        return Ok(Vec::new());
    }
    runtime()?.block_on(async {
        let host = open_existing_store(raw).await?;
        let mut out = Vec::new();
        for p in typed {
            let guid = names::project(&host, p).await;
            match guid {
                Ok(g) if !out.contains(&g) => out.push(g),
                Ok(_) => {}
                Err(e) => {
                    host.close().await;
                    return Err(e);
                }
            }
        }
        host.close().await;
        Ok(out)
    })
}

/// The password from standard input: prompted without echo at a terminal, else the first line.
fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut line = String::new();
    if terminal {
        eprint!("password for {name}: ");
        let _ = std::io::stderr().flush();
        let _echo = EchoOff::new();
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(CliError::Usage("no password given on standard input".into()).into());
    }
    Ok(password)
}

/// Turns the terminal's echo off while it lives.
struct EchoOff {
    #[cfg(unix)]
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        #[cfg(unix)]
        {
            // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios the call fills in.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) != 0 {
                    return EchoOff { saved: None };
                }
                let saved = t;
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
                EchoOff { saved: Some(saved) }
            }
        }
        #[cfg(not(unix))]
        EchoOff {}
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(t) = self.saved {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}
