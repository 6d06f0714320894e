//! Memory stays bounded under 100 MiB bodies: the listener refuses them with 413 once the cap
//! (1 MiB) is crossed, reads at most a bounded linger past it, and never buffers more than the
//! cap per request. The process's resident set is measured before and after (Linux `/proc`),
//! and the figures are printed for the record.
//!
//! A test binary of its own, so that no other test's allocations blur the figures.

mod listener_support;

use std::time::Instant;

use listener_support::*;

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

/// `VmRSS` and `VmHWM` of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("field in /proc/self/status")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_bodies_get_413_and_memory_stays_bounded() {
    let mut l = start(&["sub-1"], 64, |_| {}).await;
    let valid = notification("sub-1", &["A"], "w");
    // Warm up: allocator pools, one refused body, one accepted.
    assert_eq!(notify(l.addr(), &l.path, &valid).await.status, 200);
    assert_eq!(upload(l.addr(), &l.path, 2 << 20, true, HANG).await.0, 413);
    let (rss_before, _) = rss_kib();

    for chunked in [false, true] {
        let started = Instant::now();
        let (status, sent) = upload(l.addr(), &l.path, HUNDRED_MIB, chunked, HANG).await;
        eprintln!(
            "100 MiB {}: status {status}, {:.1} MiB written before the server closed, {:?}",
            if chunked {
                "chunked"
            } else {
                "with Content-Length"
            },
            sent as f64 / (1024.0 * 1024.0),
            started.elapsed()
        );
        assert_eq!(status, 413);
        assert!(sent < HUNDRED_MIB, "the server stopped reading");
    }
    // Eight at once, while valid notifications keep being answered.
    let started = Instant::now();
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let addr = l.addr();
            let path = l.path.clone();
            tokio::spawn(async move { upload(addr, &path, HUNDRED_MIB, i % 2 == 0, HANG).await })
        })
        .collect();
    for _ in 0..5 {
        assert_eq!(notify(l.addr(), &l.path, &valid).await.status, 200);
        l.rx.recv().await.unwrap();
    }
    let mut sent_total = 0;
    for upload in uploads {
        let (status, sent) = upload.await.unwrap();
        assert_eq!(status, 413);
        sent_total += sent;
    }
    eprintln!(
        "8 x 100 MiB at once: all 413, {:.1} MiB written in total, {:?}",
        sent_total as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    let (rss_after, hwm) = rss_kib();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "RSS before {rss_before} KiB, after {rss_after} KiB (growth {growth} KiB), peak {hwm} KiB"
    );
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB over 1 GiB of refused bodies"
    );
    assert_eq!(notify(l.addr(), &l.path, &valid).await.status, 200);
}
