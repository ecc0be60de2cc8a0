//! What memtrace cannot trace or cannot mean is refused up front, in one line that says why:
//! a kernel thread, memtrace itself, options that would show nothing or flood the terminal.

mod support;

use std::process::{Command, Output};

use support::{MEMTRACE, privileged};

fn memtrace(args: &[&str]) -> Output {
    Command::new(MEMTRACE)
        .args(args)
        .output()
        .expect("run memtrace")
}

/// A failing exit and `needle` in the first line of stderr (clap adds a usage hint after it).
fn refused(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted:\n{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.contains(needle), "expected {needle:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn options_that_mean_nothing_are_refused() {
    for (args, needle) in [
        (&["--top", "0"][..], "--top 0 would show no process"),
        (&["-i", "0.000001"], "too short an interval: at least 0.1 s"),
        (&["-i", "-1"], "-1 is not a positive number of seconds"),
        (&["--duration", "1e300"], "1e300 seconds is too long"),
        (
            &["--prometheus", "0"],
            "port 0 would listen on a random port",
        ),
    ] {
        let output = memtrace(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        refused(&output, needle);
    }
}

#[test]
fn help_states_the_ring_size_bounds() {
    let output = memtrace(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("a power of two from 4 to 1048576"), "{help}");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_kernel_thread_is_refused() {
    if !privileged() {
        return;
    }
    // pid 2 is kthreadd on every Linux since 2.6.
    let comm = std::fs::read_to_string("/proc/2/comm").expect("comm of pid 2");
    assert_eq!(comm.trim(), "kthreadd");
    for args in [&["--pid", "2"][..], &["go", "--pid", "2"]] {
        let output = memtrace(args);
        refused(&output, "pid 2 (kthreadd) is a kernel thread");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
    }
}

/// A thread id names its process in the refusal (pidfd_open says only ENOENT); the test's own
/// thread is a thread of the test process.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_thread_id_names_its_process() {
    if !privileged() {
        return;
    }
    let pid = std::process::id();
    let tid = std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let output = memtrace(&["--pid", &tid.to_string()]);
        (tid, output)
    });
    let (tid, output) = tid.join().expect("the thread ran");
    assert_ne!(tid, pid);
    refused(
        &output,
        &format!("pid {tid} is a thread of process {pid} ("),
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("trace --pid {pid}")));
}

/// A zombie has no memory: said as such, not as a missing process or a kernel thread.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_zombie_is_refused_as_exited() {
    if !privileged() {
        return;
    }
    // sh forks /bin/true, then becomes `sleep`, which never reaps it.
    let mut parent = Command::new("sh")
        .args(["-c", "/bin/true & exec sleep 30"])
        .spawn()
        .expect("run sh");
    let children = format!("/proc/{0}/task/{0}/children", parent.id());
    let zombie = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let child: u32 = std::fs::read_to_string(&children)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            stat.rsplit(')')
                .next()?
                .trim_start()
                .starts_with('Z')
                .then_some(child)
        })
        .expect("sh's child became a zombie");
    for args in [
        &["--pid", &zombie.to_string()][..],
        &["go", "--pid", &zombie.to_string()],
    ] {
        let output = memtrace(args);
        refused(
            &output,
            &format!("pid {zombie} (true) has exited (a zombie"),
        );
    }
    let _ = parent.kill();
    let _ = parent.wait();
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn memtrace_itself_is_refused() {
    if !privileged() {
        return;
    }
    // The shell's pid becomes memtrace's with exec.
    let output = Command::new("sh")
        .args(["-c", &format!("exec {MEMTRACE} --pid $$")])
        .output()
        .expect("run sh");
    refused(&output, "is memtrace itself, which it never traces");
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn go_without_privileges_says_what_it_needs() {
    if !privileged() {
        return;
    }
    let output = support::memtrace_unprivileged(&["go", "--pid", "1"]);
    refused(&output, "needs root (or CAP_BPF and CAP_PERFMON)");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("Permission denied"));
}
