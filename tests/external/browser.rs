//! A headless Chromium for the tests, driven over WebDriver: Debian's `chromium` and
//! `chromium-driver`, a chromedriver on a free loopback port, a fresh profile in a temporary
//! folder. The driver is killed (and with it the browser) when dropped.
//!
//! The flags keep the browser off the network except for the pages a test opens: on a machine
//! without internet access, background networking would fill the log with refused connections.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::not_checked;

/// The Debian/Ubuntu command that installs the browser and its WebDriver.
pub const INSTALL_BROWSER: &str = "apt-get install -y chromium chromium-driver";

/// A running chromedriver.
pub struct Driver {
    child: Child,
    profile: tempfile::TempDir,
    chromium: PathBuf,
    /// Its WebDriver URL.
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        let path = PathBuf::from(name);
        if path.is_absolute() && path.is_file() {
            return Some(path);
        }
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        let found = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if found.is_file() {
            return Some(found);
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Driver {
    /// Starts chromedriver, or reports `what` as not checked (failing under
    /// `TASKBRIDGE_TEST_REQUIRE_ALL`) when the browser or the driver is not installed.
    pub fn start(what: &str) -> Option<Driver> {
        let chromium = std::env::var_os("TASKBRIDGE_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find(&["/usr/bin/chromium", "chromium", "chromium-browser"]));
        let driver = std::env::var_os("TASKBRIDGE_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find(&["/usr/bin/chromedriver", "chromedriver"]));
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            not_checked(what, "chromium and chromedriver", INSTALL_BROWSER);
            return None;
        };
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let profile = tempfile::Builder::new()
            .prefix("taskbridge-chromium")
            .tempdir()
            .expect("a profile folder");
        let driver = Driver {
            child,
            profile,
            chromium,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(driver)
    }

    /// The capabilities of a headless session `width` pixels wide, with a profile folder of
    /// its own (`name` tells sessions of one test apart).
    pub fn capabilities(
        &self,
        name: &str,
        width: u32,
    ) -> serde_json::Map<String, serde_json::Value> {
        let profile = self.profile.path().join(name);
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},900"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = serde_json::json!({
            "binary": self.chromium.display().to_string(),
            "args": args,
        });
        // A window cannot be narrower than about 500 pixels; a phone's width is emulated.
        if width < 500 {
            options["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": 844, "pixelRatio": 1.0 }
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        caps
    }
}
