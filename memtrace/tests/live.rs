//! The live view: memtrace with its stdout on a pseudo-terminal draws a screen each interval
//! that shows the traced process's numbers; on a pipe it prints one plain line per interval.

mod support;

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::{MEMTRACE, Workload, privileged};

/// A pseudo-terminal pair: (master to read from, slave to hand to the child).
fn pty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the given ints; name/termios/winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened for us and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Collects everything written to the terminal, from a thread (the master blocks on read).
fn collect(mut master: File) -> Arc<Mutex<String>> {
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Reading fails with EIO once the child closed the slave side.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("screen lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    screen
}

fn wait_for(screen: &Mutex<String>, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = screen.lock().expect("screen lock").clone();
        if what(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not seen on the terminal:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn terminal_screen_shows_the_traced_process() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["lazyfree", "--mib", "8"]);
    let pid = workload.pid;
    let (master, slave) = pty();
    let mut memtrace = Command::new(MEMTRACE)
        .args(["--pid", &pid.to_string(), "--interval", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memtrace");
    let screen = collect(master);
    // The first frame (cursor home + clear, then the header) means memtrace is attached.
    wait_for(&screen, |s| {
        s.contains("\x1b[H\x1b[2J") && s.contains("LAZYFREE")
    });
    let mut stdin = workload.go_keeping_stdin();
    let freed = workload.next_line()["freed"].as_u64().expect("freed bytes");
    assert_eq!(freed, 8 << 20);

    // A later frame's row for the pid: FREE shows the workload's 8 MiB.
    let row_prefix = format!(
        "{pid:>7} {:<15} {:>10} {:>10}",
        "memtrace-worklo", "8.0 MiB", "0 B"
    );
    let frame_with_row = |s: &str| {
        s.split("\x1b[2J")
            .find(|frame| frame.lines().any(|l| l.starts_with(&row_prefix)))
            .map(str::to_owned)
    };
    let text = wait_for(&screen, |s| frame_with_row(s).is_some());
    let frame = frame_with_row(&text).unwrap_or_default();
    assert!(frame.contains("1 process, lost events 0"), "{frame}");

    stdin.write_all(b"count\n").expect("signal workload");
    workload.record();
    let status = memtrace.wait().expect("wait memtrace");
    assert!(status.success(), "{status}");
    // The final report follows the last frame.
    wait_for(&screen, |s| {
        s.contains("memtrace report:") && s.contains("lost events: 0")
    });
}

#[test]
fn pipe_gets_one_plain_line_per_interval() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["lazyfree", "--mib", "4"]);
    let pid = workload.pid;
    let mut memtrace = Command::new(MEMTRACE)
        .args(["--pid", &pid.to_string(), "--interval", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memtrace");
    let mut stdout = memtrace.stdout.take().expect("stdout");
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        *sink.lock().expect("lock") = text;
    });
    // Go only once memtrace says it is attached.
    // (stderr stays drained afterwards: a closed stderr would fail memtrace's later writes.)
    let mut stderr = BufReader::new(memtrace.stderr.take().expect("stderr")).lines();
    let attached = stderr
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("memtrace: attached"));
    assert!(attached, "memtrace did not attach");
    std::thread::spawn(move || stderr.for_each(drop));
    let mut stdin = workload.go_keeping_stdin();
    assert_eq!(workload.next_line()["freed"], 4 << 20);
    std::thread::sleep(Duration::from_millis(800));
    stdin.write_all(b"count\n").expect("signal workload");
    workload.record();
    assert!(memtrace.wait().expect("wait").success());
    let text = wait_for(&screen, |s| s.contains("lost events: 0"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!(" pid {pid} (memtrace-worklo): released FREE ")))
        .collect();
    assert!(
        lines.len() >= 3,
        "one line per 0.2 s interval expected:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("released FREE 4.0 MiB DONTNEED 0 B")),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no terminal codes on a pipe:\n{text}"
    );
}
