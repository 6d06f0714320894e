//! `taskbridge demo`, the README's first command, runs and passes every check.

use std::process::Command;

#[test]
fn demo_runs_the_whole_story_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .arg("demo")
        .output()
        .expect("run taskbridge demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("status updates applied on the PM side"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The approval policy is shown, the echo notifications explained, work is in hours.
    assert!(
        stdout.contains("with approval, the update waits for the status manager")
            && stdout.contains("the approved update is applied and mapped back"),
        "{stdout}"
    );
    assert!(
        stdout.contains("each edit and each write-back of its result notify"),
        "{stdout}"
    );
    assert!(!stdout.contains(" min"), "{stdout}");
    // Nothing alarming about plain HTTP to the simulator on this machine.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("plain HTTP"), "{stderr}");
}
