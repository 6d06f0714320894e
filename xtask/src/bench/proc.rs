//! Child processes of the benchmark and what the kernel says about them: CPU time of a finished
//! child (`wait4`), its peak RSS (`/proc`, sampled while it runs), CPU time and RSS of a running
//! one (`/proc`).
//!
//! Not `wait4`'s peak RSS: Linux carries a process's high-water mark across `execve`, and a
//! child forked from the benchmark starts as a copy of it, so `ru_maxrss` was the benchmark's
//! own size whenever that was the larger (378 MiB after generating a plan of 100,000
//! assignments, reported as the peak of a publish that never went past 125 MiB). The image's
//! own high-water mark (`VmHWM`) starts at the exec.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What a finished child cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// From spawn to exit.
    pub wall: Duration,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, in bytes (`VmHWM`, sampled every few milliseconds: growth in
    /// the last moments before the exit may be missed).
    pub peak_rss: u64,
}

/// Reads a child's `VmHWM` until told to stop or the child is gone; keeps the largest.
struct PeakSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakSampler {
    const EVERY: Duration = Duration::from_millis(3);

    fn start(pid: u32) -> PeakSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A zombie has no memory figures left: the last reading stands.
                    let Some((_, hwm)) = rss_of(pid) else { break };
                    peak.fetch_max(hwm, Ordering::Relaxed);
                    std::thread::sleep(Self::EVERY);
                }
            })
        };
        PeakSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A child process, killed and reaped when dropped unless it was waited for.
pub struct Proc {
    child: Child,
    peak: PeakSampler,
    started: Instant,
    reaped: bool,
    what: String,
}

impl Proc {
    /// Starts `cmd`; stderr goes to `log` (appended), stdin is closed.
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> anyhow::Result<Proc> {
        let err = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        cmd.stdin(Stdio::null()).stderr(err);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Proc {
            peak: PeakSampler::start(child.id()),
            child,
            started,
            reaped: false,
            what: what.to_string(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The child's piped stdout.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Reads stdout to its end, then waits for the exit.
    pub fn finish(mut self) -> anyhow::Result<(ExitStatus, String, Usage)> {
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)
                .with_context(|| format!("reading the output of {}", self.what))?;
        }
        let (status, usage) = self.wait()?;
        Ok((status, out, usage))
    }

    /// As [`Proc::finish`], but fails unless the child exits 0.
    pub fn finish_ok(self) -> anyhow::Result<(String, Usage)> {
        let what = self.what.clone();
        let (status, out, usage) = self.finish()?;
        if !status.success() {
            bail!("{what} exited with {status}");
        }
        Ok((out, usage))
    }

    /// Asks the child to stop (SIGTERM) and waits for it.
    pub fn terminate(mut self) -> anyhow::Result<(ExitStatus, Usage)> {
        signal(self.pid(), Signal::Term);
        self.wait()
    }

    /// Waits for the exit and collects the child's resource usage.
    pub fn wait(&mut self) -> anyhow::Result<(ExitStatus, Usage)> {
        let (status, cpu, inherited_peak) = wait4(&mut self.child)?;
        self.reaped = true;
        // `/proc` where there is one (see the module doc); `wait4`'s figure elsewhere.
        let peak_rss = match self.peak.finish() {
            0 => inherited_peak,
            sampled => sampled,
        };
        Ok((
            status,
            Usage {
                wall: self.started.elapsed(),
                cpu,
                peak_rss,
            },
        ))
    }

    /// CPU time so far (user + system, all threads), from `/proc`.
    pub fn cpu_now(&self) -> Option<Duration> {
        cpu_of(self.pid())
    }

    /// Resident set size now and its peak so far, in bytes, from `/proc`.
    pub fn rss_now(&self) -> Option<(u64, u64)> {
        rss_of(self.pid())
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.peak.finish();
    }
}

enum Signal {
    Term,
}

#[cfg(unix)]
fn signal(pid: u32, signal: Signal) {
    let sig = match signal {
        Signal::Term => libc::SIGTERM,
    };
    // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(not(unix))]
fn signal(_pid: u32, _signal: Signal) {}

#[cfg(unix)]
fn wait4(child: &mut Child) -> anyhow::Result<(ExitStatus, Duration, u64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4(2) on our own child with valid out-pointers; `Child` never reaps by
        // itself, and `reaped` keeps `Drop` from waiting a second time.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    // ru_maxrss is in kilobytes on Linux.
    Ok((
        ExitStatus::from_raw(status),
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64 * 1024,
    ))
}

#[cfg(not(unix))]
fn wait4(child: &mut Child) -> anyhow::Result<(ExitStatus, Duration, u64)> {
    Ok((child.wait()?, Duration::ZERO, 0))
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn ticks_per_second() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            return t as u64;
        }
    }
    100
}

/// User + system CPU time of a running process (all threads).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tps = ticks_per_second();
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / tps))
}

/// The fields of `/proc/<pid>/stat` after the command name (the first is the state, field 3
/// of the whole line).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    // The state is a letter; numbers from the parent's pid on.
    Some(
        rest.split(' ')
            .skip(1)
            .map(|f| f.trim().parse().unwrap_or_default())
            .collect(),
    )
}

/// CPU time of a process and of its children, running and exited: its own user + system time,
/// that of its exited children it has reaped (cutime + cstime), and all four of each running
/// child. For a database server whose backends come and go with the connections (PostgreSQL's
/// postmaster), the difference between two readings is the CPU the server spent between them.
pub fn family_cpu(pid: u32) -> Option<Duration> {
    // After the state: ppid is index 0, utime 10, stime 11, cutime 12, cstime 13.
    let own = |f: &[u64]| f.get(10..14).map_or(0, |t| t.iter().sum::<u64>());
    let mut ticks = own(&stat_fields(&pid.to_string())?);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(f) = stat_fields(name)
            && f.first() == Some(&u64::from(pid))
        {
            ticks += own(&f);
        }
    }
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / ticks_per_second(),
    ))
}

/// VmRSS and VmHWM of a running process, in bytes.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// Waits until `pid` has used at most `share` of a core over `window`, or `limit` passed;
/// returns how long it took, or `None` when it never went quiet.
pub fn wait_idle(pid: u32, window: Duration, share: f64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let step = Duration::from_millis(100);
    let mut samples: std::collections::VecDeque<(Instant, Duration)> = Default::default();
    while start.elapsed() < limit {
        let now = Instant::now();
        let cpu = cpu_of(pid)?;
        samples.push_back((now, cpu));
        // Keep the newest sample that is at least `window` old at the front.
        while samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            samples.pop_front();
        }
        if let Some((t0, c0)) = samples.front()
            && now.duration_since(*t0) >= window
        {
            let used = cpu.saturating_sub(*c0).as_secs_f64();
            if used <= share * now.duration_since(*t0).as_secs_f64() {
                return Some(start.elapsed().saturating_sub(window));
            }
        }
        std::thread::sleep(step);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_reports_cpu_and_rss() {
        let pid = std::process::id();
        let own = cpu_of(pid).expect("cpu");
        // Read after the process's own time, so it can only be larger.
        assert!(family_cpu(pid).is_some_and(|f| f >= own));
        let (rss, hwm) = rss_of(pid).expect("rss");
        assert!(rss > 0 && hwm >= rss);
    }
}
