//! The configuration as an operator meets it, through the binary: a missing `--config`, a
//! mistyped `TASKBRIDGE_*` variable, a value of the wrong type, `config check` and
//! `config show`, and `check` without `--user`.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_taskbridge");

fn taskbridge(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    // The suite's own variables are inherited; only the ones a test sets are added.
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run taskbridge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn init(dir: &Path) {
    let out = taskbridge(dir, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn explicit_missing_config_is_a_usage_error_while_the_default_may_be_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = taskbridge(
        dir.path(),
        &["--config", "/nonexistent/taskbridge.toml", "config", "show"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/nonexistent/taskbridge.toml does not exist"),
        "{}",
        text(&out.stderr)
    );
    let out = taskbridge(
        dir.path(),
        &["config", "show"],
        &[("TASKBRIDGE_CONFIG", "/nonexistent/taskbridge.toml")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // No file named: the default is absent and the built-in defaults apply.
    let out = taskbridge(dir.path(), &["config", "show"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("./taskbridge.toml (absent)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn mistyped_variable_is_refused_naming_the_closest_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path());
    let out = taskbridge(
        dir.path(),
        &["status"],
        &[(
            "TASKBRIDGE_EXCHNGE_URL",
            "https://mail.example.com/EWS/Exchange.asmx",
        )],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown environment variable TASKBRIDGE_EXCHNGE_URL"),
        "{err}"
    );
    assert!(
        err.contains("did you mean TASKBRIDGE_EXCHANGE_URL?"),
        "{err}"
    );
}

#[test]
fn type_error_names_the_key_and_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        "# a comment\n[exchange]\nauth = \"none\"\nurl = 42\n",
    )
    .expect("write");
    let out = taskbridge(
        dir.path(),
        &["--config", "bad.toml", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml: line 4: exchange.url:"), "{err}");
    assert!(err.contains("expected a string"), "{err}");
}

#[test]
fn config_check_passes_after_init_and_lists_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    init(d);
    let out = taskbridge(d, &["config", "check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("configuration ok: ./taskbridge.toml"),
        "{}",
        text(&out.stdout)
    );

    // Three problems at once: no password anywhere, a CA file that is not PEM, and a public
    // URL that is a listen address.
    std::fs::remove_file(d.join("taskbridge-data/exchange.password")).expect("rm password");
    std::fs::write(d.join("ca.pem"), "not a certificate\n").expect("write ca");
    let config = std::fs::read_to_string(d.join("taskbridge.toml")).expect("config");
    let config = config
        .replacen("ca_file = \"\"", "ca_file = \"ca.pem\"", 1)
        .replace(
            "public_url = \"http://127.0.0.1:8081/ews/notify\"",
            "public_url = \"http://0.0.0.0:8081/ews/notify\"",
        );
    std::fs::write(d.join("taskbridge.toml"), config).expect("write config");
    let out = taskbridge(d, &["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("exchange.password_env: no password")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("exchange.ca_file:") && l.contains("no PEM certificate")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("listener.public_url:") && l.contains("0.0.0.0")),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("3 problems"),
        "{}",
        text(&out.stderr)
    );

    // The password in its variable is enough.
    let out = taskbridge(
        d,
        &["config", "check"],
        &[("TASKBRIDGE_EXCHANGE_PASSWORD", "from-the-variable")],
    );
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("exchange.password_env"), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

#[test]
fn config_show_gives_each_source_and_never_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("taskbridge.toml"),
        "[exchange]\nuser = \"svc@contoso.com\"\n\n[pm]\nwebhook_url = \"https://hook:s3cr3t-in-url@pm.example.com/hook\"\n",
    )
    .expect("write");
    let out = taskbridge(
        d,
        &["config", "show"],
        &[
            ("TASKBRIDGE_SYNC_POLICY", "pm-wins"),
            ("TASKBRIDGE_EXCHANGE_PASSWORD", "hunter2-password-value"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |key: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_string()
    };
    assert!(
        line("exchange.user").contains("\"svc@contoso.com\""),
        "{stdout}"
    );
    assert!(line("exchange.user").ends_with("# file"), "{stdout}");
    assert!(line("sync.policy").contains("\"pm-wins\""), "{stdout}");
    assert!(
        line("sync.policy").ends_with("# variable TASKBRIDGE_SYNC_POLICY"),
        "{stdout}"
    );
    assert!(line("sync.debounce_ms").ends_with("# default"), "{stdout}");
    assert!(
        line("exchange.password_env").ends_with("# default; set"),
        "{stdout}"
    );
    assert!(
        line("pm.webhook_url").contains("hook:***@pm.example.com"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2-password-value"), "{stdout}");
    assert!(!stdout.contains("s3cr3t-in-url"), "{stdout}");

    let out = taskbridge(d, &["--data-dir", "elsewhere", "config", "show"], &[]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("data_dir = \"elsewhere\"") && l.ends_with("# --data-dir")),
        "{}",
        text(&out.stdout)
    );
    let out = taskbridge(
        d,
        &["config", "show"],
        &[("TASKBRIDGE_DATA_DIR", "from-variable")],
    );
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("data_dir = \"from-variable\"")
                && l.ends_with("# variable TASKBRIDGE_DATA_DIR")),
        "{}",
        text(&out.stdout)
    );

    let out = taskbridge(d, &["config", "show", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let user = rows
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["key"] == "exchange.user")
        .expect("exchange.user");
    assert_eq!(user["source"], "file");
}

#[test]
fn check_without_user_says_that_auth_defaults_to_ntlm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = taskbridge(
        dir.path(),
        &["check", "--url", "http://127.0.0.1:9/EWS/Exchange.asmx"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--auth ntlm needs --user"), "{err}");
    assert!(err.contains("--auth defaults to ntlm"), "{err}");
}

#[test]
fn config_check_takes_negotiate_without_a_password_and_names_a_bad_spn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    init(d);
    std::fs::remove_file(d.join("taskbridge-data/exchange.password")).expect("rm password");
    let negotiate = [("TASKBRIDGE_EXCHANGE_AUTH", "negotiate")];
    let out = taskbridge(d, &["config", "check"], &negotiate);
    let stdout = text(&out.stdout);
    // Kerberos needs no password; a machine without the GSSAPI library is told so.
    assert!(!stdout.contains("exchange.password_env"), "{stdout}");
    let library = stdout.contains("exchange.auth: Kerberos is not available");
    assert_eq!(out.status.success(), !library, "{stdout}");
    if library {
        assert!(stdout.contains("libgssapi-krb5-2"), "{stdout}");
    }

    let out = taskbridge(
        d,
        &["config", "check"],
        &[
            ("TASKBRIDGE_EXCHANGE_AUTH", "negotiate"),
            ("TASKBRIDGE_EXCHANGE_SPN", "mail.contoso.com"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("exchange.spn:") && l.contains("SERVICE/host")),
        "{stdout}"
    );
}
