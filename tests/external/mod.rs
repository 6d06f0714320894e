//! What a test needs from outside the repository, and what it does when that is missing.
//!
//! `cargo test` on a fresh clone with only a Rust toolchain must pass: a check that needs a tool or
//! a file the repository does not hold (xmllint and xsltproc for schema validation, the official EWS
//! schema in `../shared/ews-schema`) runs when it is there and otherwise writes one line to the
//! terminal saying what was not checked and the command that enables it. The line goes to the
//! process's stderr directly (`io::Write`), not through `eprintln!`, because the test harness captures
//! the output of passing tests and the line is meant to be seen.
//!
//! Under `TASKBRIDGE_TEST_REQUIRE_ALL=1` (set by `.ci/run`) a missing dependency fails the test
//! instead, so CI always runs everything.
#![allow(dead_code)] // each test binary uses part of it

pub mod browser;
pub mod kerberos;
pub mod pg_cluster;
pub mod postgres;
pub mod redmine;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable under which a missing dependency fails the test instead of being reported.
pub const REQUIRE_ALL: &str = "TASKBRIDGE_TEST_REQUIRE_ALL";

/// The Debian/Ubuntu command that installs the schema tools.
pub const INSTALL_SCHEMA_TOOLS: &str = "apt-get install -y libxml2-utils xsltproc";

/// Whether every external dependency is required (CI).
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that `what` was not checked because `missing` is absent, and how to `enable` it; under
/// [`REQUIRE_ALL`] it fails the calling test instead.
pub fn not_checked(what: &str, missing: &str, enable: &str) {
    if require_all() {
        panic!(
            "{REQUIRE_ALL} is set and {missing} is missing, so {what} cannot be checked; {enable}"
        );
    }
    let line = format!("NOT CHECKED: {what} (no {missing}); to check it: {enable}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Whether `tool` runs (`tool --version` exits 0).
fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether xmllint and xsltproc, which both `validate.sh` scripts need, are installed; reports
/// `what` as not checked when they are not.
pub fn schema_tools(what: &str) -> bool {
    let missing: Vec<&str> = ["xmllint", "xsltproc"]
        .into_iter()
        .filter(|t| !runs(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    not_checked(what, &missing.join(" and "), INSTALL_SCHEMA_TOOLS);
    false
}

/// The official EWS schema folder (`validate.sh` and the schema sets): `TASKBRIDGE_EWS_SCHEMA_DIR`,
/// or `../shared/ews-schema` beside the crate. `None` (reported as not checking `what`) when it is
/// not there.
pub fn official_schema(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TASKBRIDGE_EWS_SCHEMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ews-schema"));
    if dir.join("validate.sh").is_file() && dir.join("exchange_online_2018/types.xsd").is_file() {
        return Some(dir);
    }
    not_checked(
        what,
        &format!("official EWS schema at {}", dir.display()),
        "put the ews-schema folder there or set TASKBRIDGE_EWS_SCHEMA_DIR to it",
    );
    None
}

/// Runs `script -m both -q` (a `validate.sh`) over `files`: `Err` with its report when any fails.
pub fn validate(script: &Path, files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script)
        .args(["-m", "both", "-q"])
        .args(files)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed ({}):\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The repository's own schema subset's validator.
pub fn subset_validator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wsdl/validate.sh")
}

/// Checks that each file is well-formed XML with one root element: what can be checked of a
/// message without the schema tools.
pub fn assert_well_formed(files: &[PathBuf]) {
    for file in files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut reader = quick_xml::Reader::from_str(&text);
        reader.config_mut().check_end_names = true;
        let (mut depth, mut roots) = (0usize, 0usize);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(_)) => {
                    roots += usize::from(depth == 0);
                    depth += 1;
                }
                Ok(quick_xml::events::Event::Empty(_)) => roots += usize::from(depth == 0),
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("{} is not well-formed XML: {e}", file.display()),
            }
        }
        assert_eq!(
            (depth, roots),
            (0, 1),
            "{} has no single root element",
            file.display()
        );
    }
}
