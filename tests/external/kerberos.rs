//! A throw-away MIT Kerberos realm for the tests: `kdb5_util`, `kadmin.local` and `krb5kdc` from
//! Debian's krb5-kdc and krb5-admin-server, `kinit` from krb5-user. The realm's database,
//! configuration, keytabs and ticket caches live in a temporary folder; the KDC listens on a
//! free loopback port. Nothing touches the machine's own Kerberos setup: the variables that
//! point the tools at the realm (`KRB5_CONFIG`, `KRB5_KDC_PROFILE`, ...) are set only for the
//! child processes, never in the test process. The KDC is killed when the realm is dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::not_checked;

/// The Debian/Ubuntu command that installs the KDC and the client tools.
pub const INSTALL_KRB5: &str = "apt-get install -y krb5-kdc krb5-admin-server krb5-user";

/// The realm's name.
pub const REALM: &str = "TASKBRIDGE.TEST";

/// A running realm.
pub struct Realm {
    dir: tempfile::TempDir,
    kdc: Child,
    /// The KDC's port (UDP and TCP on 127.0.0.1).
    pub port: u16,
}

/// `tool` in /usr/sbin or /usr/bin (root's tools are not on every user's `PATH`), or on the
/// `PATH`.
fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return Some(path);
        }
    }
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file().then_some(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Realm {
    /// Creates the realm and starts its KDC, or reports `what` as not checked (failing under
    /// `TASKBRIDGE_TEST_REQUIRE_ALL`) when the Kerberos tools are not installed.
    pub fn start(what: &str) -> Option<Realm> {
        let missing: Vec<&str> = ["krb5kdc", "kdb5_util", "kadmin.local", "kinit"]
            .into_iter()
            .filter(|t| tool(t).is_none())
            .collect();
        if !missing.is_empty() {
            not_checked(what, &missing.join(", "), INSTALL_KRB5);
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("taskbridge-krb5-")
            .tempdir()
            .expect("temporary directory");
        let port = free_port();
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("krb5.conf"),
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n \
                 dns_lookup_realm = false\n dns_canonicalize_hostname = false\n rdns = false\n \
                 udp_preference_limit = 1\n default_ccache_name = FILE:{d}/default.ccache\n \
                 default_client_keytab_name = FILE:{d}/no-client.keytab\n\
                 [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n\
                 [domain_realm]\n localhost = {REALM}\n"
            ),
        )
        .expect("krb5.conf");
        std::fs::write(
            dir.path().join("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n\
                 [realms]\n {REALM} = {{\n  database_name = {d}/principal\n  \
                 key_stash_file = {d}/stash\n  acl_file = {d}/kadm5.acl\n  \
                 kdc_ports = {port}\n  kdc_tcp_ports = {port}\n  max_life = 1h\n }}\n\
                 [logging]\n kdc = FILE:{d}/kdc.log\n"
            ),
        )
        .expect("kdc.conf");
        std::fs::write(dir.path().join("kadm5.acl"), "").expect("acl");
        let mut realm = Realm {
            kdc: Command::new("true").spawn().expect("placeholder process"),
            dir,
            port,
        };
        realm.run(
            "kdb5_util",
            &["create", "-s", "-r", REALM, "-P", "throw-away-master-key"],
        );
        let kdc = realm
            .command("krb5kdc")
            .args(["-n", "-r", REALM])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start krb5kdc");
        let _ = realm.kdc.wait();
        realm.kdc = kdc;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "krb5kdc did not listen on {port}: {}",
                std::fs::read_to_string(realm.dir.path().join("kdc.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(realm)
    }

    /// The realm's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The variables that point Kerberos at this realm, for a child process.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("KRB5_CONFIG", self.dir().join("krb5.conf").into()),
            ("KRB5_KDC_PROFILE", self.dir().join("kdc.conf").into()),
            ("KRB5RCACHEDIR", self.dir().into()),
        ]
    }

    /// `name` (a Kerberos tool) with the realm's variables.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(tool(name).unwrap_or_else(|| PathBuf::from(name)));
        c.envs(self.env());
        c
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        let out = self.command(name).args(args).output().expect(name);
        assert!(
            out.status.success(),
            "{name} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Adds `principal` (e.g. `HTTP/localhost` or `ann`) with a random key and writes its key
    /// to a keytab of its own, whose path is returned.
    pub fn add_principal(&self, principal: &str) -> PathBuf {
        let keytab = self
            .dir()
            .join(format!("{}.keytab", principal.replace('/', "_")));
        self.run(
            "kadmin.local",
            &["-r", REALM, "-q", &format!("addprinc -randkey {principal}")],
        );
        let kt = keytab.display().to_string();
        self.run(
            "kadmin.local",
            &["-r", REALM, "-q", &format!("ktadd -k {kt} {principal}")],
        );
        keytab
    }

    /// Gets a ticket-granting ticket for `principal` from its `keytab` into a ticket cache of its
    /// own, whose path is returned.
    pub fn kinit(&self, principal: &str, keytab: &Path) -> PathBuf {
        let ccache = self
            .dir()
            .join(format!("{}.ccache", principal.replace('/', "_")));
        let kt = keytab.display().to_string();
        let cc = ccache.display().to_string();
        self.run("kinit", &["-k", "-t", &kt, "-c", &cc, principal]);
        ccache
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        let _ = self.kdc.kill();
        let _ = self.kdc.wait();
    }
}
