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
    pty_of(None)
}

/// memtrace with `args`, drawing on a new pseudo-terminal of `size` (rows, columns; none:
/// 0×0): the child, and what it has drawn so far.
fn on_pty(args: &[&str], size: Option<(u16, u16)>) -> (std::process::Child, Arc<Mutex<String>>) {
    let (master, slave) = pty_of(size);
    let child = Command::new(MEMTRACE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memtrace");
    (child, collect(master))
}

/// A pseudo-terminal pair whose terminal has `(rows, columns)`, or no size (0×0).
fn pty_of(size: Option<(u16, u16)>) -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = size.map(|(rows, cols)| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let size_ptr = size.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: openpty writes two fds into the given ints; name/termios may be null, winsize
    // is null or points to a live struct.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            size_ptr,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened for us and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Collects what memtrace prints on a pipe, line by line, from a thread.
fn collect_lines(stdout: std::process::ChildStdout) -> Arc<Mutex<String>> {
    let screen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&screen);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut text = sink.lock().expect("lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    screen
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
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn terminal_screen_shows_the_traced_process() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["lazyfree", "--mib", "8"]);
    let pid = workload.pid;
    let (mut memtrace, screen) = on_pty(&["--pid", &pid.to_string(), "--interval", "0.2"], None);
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

/// With `--follow`, whose children may be thousands, the screen shows at most `--top` rows even
/// on a terminal that reports no size: 20 children of the workload (its own count), 3 rows.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn terminal_screen_caps_followed_children_at_top() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&[
        "fork-many",
        "--children",
        "20",
        "--hold-ms",
        "3000",
        "--child-dontneed-pages",
        "1",
    ]);
    let pid = workload.pid.to_string();
    let args = ["--pid", &pid, "--follow", "--top", "3", "--interval", "0.2"];
    let (mut memtrace, screen) = on_pty(&args, None);
    wait_for(&screen, |s| s.contains("PID"));
    workload.go();
    // A frame taken while the parent and all its children live.
    let full = |s: &str| {
        s.split(CLEAR)
            .find(|frame| frame.contains(" 21 processes"))
            .map(str::to_owned)
    };
    let text = wait_for(&screen, |s| full(s).is_some());
    let frame = full(&text).unwrap_or_default();
    let rows = frame
        .lines()
        .filter(|l| {
            l.get(..7)
                .is_some_and(|pid| pid.trim().parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(rows, 3, "{frame}");
    assert_eq!(workload.record()["children"], 20);
    let status = memtrace.wait().expect("wait memtrace");
    assert!(status.success(), "{status}");
}

/// With `--by cgroup`, the screen lists the groups under the processes: the workload's cgroup
/// with what its one process released (the workload's own count) and the limit the test set.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn terminal_screen_lists_the_groups_with_by() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = support::MemCgroup::new("liveby", 256 << 20) else {
        return;
    };
    let mut workload = Workload::spawn_in_cgroup(&cgroup.path, &["lazyfree", "--mib", "8"]);
    let pid = workload.pid;
    let pid_arg = pid.to_string();
    let args = ["--pid", &pid_arg, "--interval", "0.2", "--by", "cgroup"];
    let (mut memtrace, screen) = on_pty(&args, None);
    wait_for(&screen, |s| s.contains("LAZYFREE"));
    let mut stdin = workload.go_keeping_stdin();
    let freed = workload.next_line()["freed"].as_u64().expect("freed bytes");
    assert_eq!(freed, 8 << 20);
    let title = format!("cgroup {}", cgroup.name());
    let row = |s: &str| {
        s.split("\x1b[2J")
            .filter(|frame| frame.contains("GROUP "))
            .flat_map(str::lines)
            .filter(|l| l.starts_with(&title))
            .map(str::to_owned)
            .find(|l| l.contains("8.0 MiB"))
    };
    let text = wait_for(&screen, |s| row(s).is_some());
    let row = row(&text).unwrap_or_default();
    let columns: Vec<&str> = row[title.len()..].split_whitespace().collect();
    // PROCS, RELEASED, and the limit the test set.
    assert_eq!(columns.first(), Some(&"1"), "{row}");
    assert_eq!(columns[1..3].join(" "), "8.0 MiB", "{row}");
    assert!(row.contains("256.0 MiB"), "{row}");
    stdin.write_all(b"count\n").expect("signal workload");
    workload.record();
    let status = memtrace.wait().expect("wait memtrace");
    assert!(status.success(), "{status}");
}

/// System-wide in a 60×15 terminal: frames on the alternate screen, each fitting the terminal
/// (no line wider than 60 columns, at most 14 lines, so nothing scrolls), and the final report
/// printed after leaving it.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_small_terminal_gets_frames_that_fit_on_the_alternate_screen() {
    if !privileged() {
        return;
    }
    const ENTER: &str = "\x1b[?1049h";
    const LEAVE: &str = "\x1b[?1049l";
    let (mut memtrace, screen) = on_pty(&["--interval", "0.2"], Some((15, 60)));
    let frames = |text: &str| text.matches(CLEAR).count();
    wait_for(&screen, |text| frames(text) >= 3);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(memtrace.id() as i32, libc::SIGINT) };
    assert!(memtrace.wait().expect("wait").success());
    let text = wait_for(&screen, |text| text.contains("memtrace report:"));
    let (drawn, after) = text.split_once(LEAVE).expect("left the alternate screen");
    let drawn = drawn
        .strip_prefix(ENTER)
        .expect("frames on the alternate screen");
    assert!(after.contains("memtrace report:") && !after.contains(CLEAR));
    for frame in drawn.split(CLEAR).filter(|f| !f.is_empty()) {
        // The terminal turns each newline into CR LF.
        let lines: Vec<&str> = frame.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert!(lines.len() <= 14, "{} lines:\n{frame}", lines.len());
        assert!(
            lines.iter().all(|l| l.chars().count() <= 60),
            "a line wider than 60 columns:\n{frame}"
        );
        assert!(lines[0].starts_with("memtrace — "), "{frame}");
    }
}

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
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
    let screen = collect_lines(memtrace.stdout.take().expect("stdout"));
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
    // Three interval lines after the release, before the workload ends.
    wait_for(&screen, |text| {
        text.lines()
            .filter(|l| l.contains("released FREE 4.0 MiB DONTNEED 0 B"))
            .count()
            >= 3
    });
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

/// Moves the cursor home and clears the screen: where each frame begins.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// The screen's columns, by width (one space between them).
const WIDTHS: [usize; 11] = [7, 15, 10, 10, 10, 10, 10, 9, 8, 10, 10];

/// One process's row of a frame, column by column.
#[derive(Debug)]
struct Row {
    free: String,
    dontneed: String,
    released_per_s: String,
    minor_per_s: u64,
    rss: String,
    lazy_free: String,
}

impl Row {
    fn parse(line: &str) -> Self {
        let chars: Vec<char> = line.chars().collect();
        let mut at = 0;
        let columns: Vec<String> = WIDTHS
            .iter()
            .map(|&width| {
                let end = (at + width).min(chars.len());
                let column: String = chars[at.min(end)..end].iter().collect();
                at = end + 1;
                column.trim().to_owned()
            })
            .collect();
        let count = |column: &str| {
            column
                .parse()
                .unwrap_or_else(|_| panic!("{column:?} in row {line:?}"))
        };
        Self {
            free: columns[2].clone(),
            dontneed: columns[3].clone(),
            released_per_s: columns[4].clone(),
            minor_per_s: count(&columns[7]),
            rss: columns[9].clone(),
            lazy_free: columns[10].clone(),
        }
    }
}

/// A frame's row for the traced process, and when its last byte reached the terminal.
#[derive(Debug)]
struct Frame {
    row: Row,
    arrived: Instant,
}

/// Everything written to the terminal, with when each piece arrived.
#[derive(Default)]
struct Terminal {
    bytes: Vec<u8>,
    /// `(end offset, arrival)` of each read.
    reads: Vec<(usize, Instant)>,
}

impl Terminal {
    fn arrival(&self, offset: usize) -> Instant {
        self.reads
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|&(_, at)| at)
            .expect("offset within what was read")
    }

    /// The frames drawn so far that hold `pid`'s whole row, oldest first.
    fn frames(&self, pid: u32) -> Vec<Frame> {
        let text = String::from_utf8_lossy(&self.bytes);
        let prefix = format!("{pid:>7} ");
        let mut frames = Vec::new();
        for (start, _) in text.match_indices(CLEAR) {
            let body = &text[start + CLEAR.len()..];
            let body = &body[..body.find(CLEAR).unwrap_or(body.len())];
            let mut offset = start + CLEAR.len();
            for line in body.split_inclusive('\n') {
                offset += line.len();
                if line.starts_with(&prefix) && line.ends_with('\n') {
                    frames.push(Frame {
                        row: Row::parse(line.trim_end()),
                        arrived: self.arrival(offset - 1),
                    });
                }
            }
        }
        frames
    }
}

/// memtrace drawing its screen on a pseudo-terminal; returns once it says it is attached.
struct OnTerminal {
    child: std::process::Child,
    terminal: Arc<Mutex<Terminal>>,
}

impl OnTerminal {
    fn spawn(args: &[&str]) -> Self {
        let (mut master, slave) = pty();
        let mut child = Command::new(MEMTRACE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let terminal = Arc::new(Mutex::new(Terminal::default()));
        let sink = Arc::clone(&terminal);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Reading fails with EIO once the child closed the slave side.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut terminal = sink.lock().expect("terminal lock");
                terminal.bytes.extend_from_slice(&buf[..n]);
                let end = terminal.bytes.len();
                terminal.reads.push((end, Instant::now()));
            }
        });
        attached(&mut child);
        Self { child, terminal }
    }

    /// Waits until the frames drawn so far satisfy `enough`, and returns them.
    fn frames_until(&self, pid: u32, enough: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let frames = self.terminal.lock().expect("terminal lock").frames(pid);
            if enough(&frames) {
                return frames;
            }
            assert!(Instant::now() < deadline, "frames so far: {frames:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(mut self) {
        let status = self.child.wait().expect("wait memtrace");
        assert!(status.success(), "{status}");
    }
}

/// Reads memtrace's stderr up to its "attached" line, then keeps draining it in the background
/// (a closed stderr would fail memtrace's later writes).
fn attached(child: &mut std::process::Child) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in stderr.by_ref().map_while(Result::ok) {
        if line.starts_with("memtrace: attached") {
            std::thread::spawn(move || stderr.for_each(drop));
            return;
        }
        seen.push(line);
    }
    panic!("memtrace did not attach: {seen:?}");
}

/// Bytes as the live view prints them (`0 B`, `12.3 MiB`, `≥1.0 GiB`), with the rounding of
/// that display: `(value, plus or minus)`.
fn bytes_shown(text: &str) -> (f64, f64) {
    let text = text.trim_start_matches('≥');
    let (number, unit) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("{text:?}"));
    let scale = match unit {
        "B" => return (number, 0.5),
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit of {text:?}"),
    };
    (number * scale, 0.05 * scale)
}

/// Whether `shown` can be a display of a value in `[low, high]`.
fn shows_between(shown: &str, low: f64, high: f64) -> bool {
    let (value, rounding) = bytes_shown(shown);
    value + rounding >= low && value - rounding <= high
}

fn number(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// The first frame's rates cover the time since attach, when every count was zero: a release
/// and the faults before it, inside the first interval, show there (they once read 0 B/s and 0/s).
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn the_first_frame_shows_rates_since_attach() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["lazyfree", "--mib", "64"]);
    let pid = workload.pid;
    let spawned = Instant::now();
    // An interval long enough for the workload to be done well inside the first one.
    let memtrace = OnTerminal::spawn(&["--pid", &pid.to_string(), "--interval", "2"]);
    let mut stdin = workload.go_keeping_stdin();
    let done = workload.next_line();
    let (freed, minflt) = (number(&done["freed"]), number(&done["minflt"]));
    assert_eq!(freed, 64 << 20);
    let frames = memtrace.frames_until(pid, |frames| !frames.is_empty());
    let first = &frames[0];
    // The time the rates divide by: from attach to the frame's snapshot. At least the interval
    // (timers never fire early), at most the time since memtrace was started.
    let (shortest, longest) = (2.0, first.arrived.duration_since(spawned).as_secs_f64());
    assert_eq!(
        (first.row.free.as_str(), first.row.dontneed.as_str()),
        ("64.0 MiB", "0 B"),
        "{first:?}"
    );
    assert!(
        shows_between(
            &first.row.released_per_s,
            freed as f64 / longest,
            freed as f64 / shortest
        ),
        "{} B released in {shortest}..{longest} s: {first:?}",
        freed
    );
    // Every fault the workload counted falls in this interval (the process may take a few
    // more, printing): at least that many per second.
    assert!(
        first.row.minor_per_s > 0
            && first.row.minor_per_s as f64 >= (minflt as f64 / longest).floor(),
        "{minflt} faults in {shortest}..{longest} s: {first:?}"
    );
    // A --pid target's RSS and LazyFree come from smaps_rollup, read just before the frame:
    // a page-table walk, against the kernel's counters in the workload's /proc/self/status.
    let (rss_anon, vm_rss) = (
        number(&done["rss_anon"]) as f64,
        number(&done["vm_rss"]) as f64,
    );
    assert!(
        shows_between(&first.row.rss, rss_anon - slack(), vm_rss + slack()),
        "RssAnon {rss_anon}, VmRSS {vm_rss}: {first:?}"
    );
    // All 64 MiB are lazily freed but for pages still in a per-CPU LRU batch (see rss.rs).
    let batched = 31.0 * cpus() * 4096.0;
    assert!(
        shows_between(&first.row.lazy_free, freed as f64 - batched, freed as f64),
        "{first:?}"
    );
    stdin.write_all(b"count\n").expect("signal workload");
    workload.record();
    memtrace.wait();
}

fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// How far the kernel's RSS counters may be from the truth: they are per-CPU batched, 32 pages
/// per CPU, on both sides of a comparison (see rss.rs).
fn slack() -> f64 {
    2.0 * 32.0 * cpus() * 4096.0
}

/// Steady faults and releases in every interval show in every frame: each frame is drawn from a
/// sample taken just before it (drawn before the sample, frames under load read faults 0/s).
/// Once the work stopped, the totals equal the workload's own count and the rate drops to 0.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn every_frame_under_steady_load_counts_its_interval() {
    if !privileged() {
        return;
    }
    let mut workload = Workload::spawn(&["steady", "--pages", "256", "--period-ms", "5"]);
    let pid = workload.pid;
    let memtrace = OnTerminal::spawn(&["--pid", &pid.to_string(), "--interval", "0.5"]);
    let mut stdin = workload.go_keeping_stdin();
    let went = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let stopping = Instant::now();
    stdin.write_all(b"stop\n").expect("stop the workload");
    let record = workload.next_line();
    let released = number(&record["released"]) as f64;
    // Every release drained: a frame whose totals are the workload's.
    let all_counted = |frame: &Frame| shows_between(&frame.row.dontneed, released, released);
    let frames = memtrace.frames_until(pid, |frames| {
        frames
            .iter()
            .position(all_counted)
            .is_some_and(|i| i + 1 < frames.len())
    });
    // Frames whose whole interval fell in the work: the previous frame came after go, this one
    // before the stop.
    let busy: Vec<&Frame> = frames
        .windows(2)
        .filter(|w| w[0].arrived > went && w[1].arrived < stopping)
        .map(|w| &w[1])
        .collect();
    assert!(busy.len() >= 3, "{frames:#?}");
    for frame in &busy {
        assert!(
            frame.row.minor_per_s > 0 && frame.row.released_per_s != "0 B",
            "a frame under load without faults or releases: {frame:?}\n{frames:#?}"
        );
    }
    let totals: Vec<f64> = frames
        .iter()
        .map(|f| bytes_shown(&f.row.dontneed).0)
        .collect();
    assert!(totals.is_sorted(), "totals went down: {frames:#?}");
    // The first frame with every release drained was sampled after the last one; nothing was
    // released in the next frame's interval.
    let counted = frames.iter().position(all_counted).unwrap_or_default();
    assert_eq!(frames[counted].row.free, "0 B");
    assert_eq!(frames[counted + 1].row.released_per_s, "0 B", "{frames:#?}");
    stdin.write_all(b"exit\n").expect("end the workload");
    workload.record();
    memtrace.wait();
}

/// memtrace printing plain lines on a pipe; returns once it says it is attached.
struct OnPipe {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Reads the pipe until memtrace closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl OnPipe {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(MEMTRACE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock()
                    .expect("lines lock")
                    .push((Instant::now(), line));
            }
        });
        attached(&mut child);
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The interval lines printed so far (the report that ends the run is not one of them).
    fn interval_lines(&self) -> Vec<(Instant, String)> {
        let lines = self.lines.lock().expect("lines lock");
        lines
            .iter()
            .take_while(|(_, line)| !line.starts_with("memtrace report"))
            .cloned()
            .collect()
    }

    fn wait_for_lines(&self, after: Instant, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .interval_lines()
            .iter()
            .filter(|(at, _)| *at > after)
            .count()
            < count
        {
            assert!(Instant::now() < deadline, "{:#?}", self.interval_lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it as a user would (Ctrl-C) and returns every interval line.
    fn interrupt(mut self) -> Vec<(Instant, String)> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait memtrace");
        assert!(status.success(), "{status}");
        // Every line is in once the reader has seen the end of the pipe.
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the pipe's reader");
        }
        self.interval_lines()
    }
}

/// The text of a plain line between `key` and the next `until`.
fn field<'a>(line: &'a str, key: &str, until: &str) -> &'a str {
    let rest = line
        .split_once(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        .1;
    rest.split_once(until).map_or(rest, |(value, _)| value)
}

/// System-wide, RSS comes from the kernel's counters, never 0 as a fact; and no rate reads -0
/// (a sum of no rows once printed "faults -0/s").
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn system_wide_lines_show_rss_from_the_kernel_and_no_minus_zero() {
    if !privileged() {
        return;
    }
    let name = format!("live{}", std::process::id());
    let mut workload = Workload::spawn_named(&name, &["lazyfree", "--mib", "64"]);
    let pid = workload.pid;
    // A large ring: every process on the machine streams here.
    let memtrace = OnPipe::spawn(&["--comm", &name, "--interval", "0.3", "--ring-size", "65536"]);
    let attached = Instant::now();
    memtrace.wait_for_lines(attached, 2);
    let mut stdin = workload.go_keeping_stdin();
    let went = Instant::now();
    let done = workload.next_line();
    let settled = Instant::now();
    memtrace.wait_for_lines(settled, 4);
    stdin.write_all(b"count\n").expect("signal workload");
    workload.record();
    let lines = memtrace.interrupt();

    for (_, line) in &lines {
        assert!(!line.contains("-0"), "{line}");
    }
    // Before go the workload has done nothing memtrace sees: no process is listed.
    let before: Vec<&str> = lines
        .iter()
        .filter(|(at, _)| *at < went)
        .map(|(_, line)| line.split_once(' ').map_or("", |(_, rest)| rest))
        .collect();
    assert!(!before.is_empty(), "{lines:#?}");
    for line in before {
        assert_eq!(
            line.split_once("; lost ").map_or("", |(head, _)| head),
            "0 processes: released FREE 0 B DONTNEED 0 B (0 B/s); faults 0/s minor 0/s major; rss 0 B lazyfree 0 B"
        );
    }
    // After the release (printed once its lines drained): the kernel's counters, which have
    // seen anon memory change. They are at least RssAnon and at most VmRSS of the workload's
    // own /proc/self/status, to within per-CPU counter batching.
    let slack = slack();
    let (rss_anon, vm_rss) = (
        number(&done["rss_anon"]) as f64,
        number(&done["vm_rss"]) as f64,
    );
    // Lines are stamped when read: the first one read after the workload said it was done may
    // have been drawn just before (seen once in a TCG guest), so it is not judged.
    let after: Vec<&str> = lines
        .iter()
        .filter(|(at, _)| *at > settled)
        .skip(1)
        .map(|(_, line)| line.as_str())
        .collect();
    assert!(after.len() >= 3, "{lines:#?}");
    for line in after {
        assert!(
            line.contains(&format!(
                " pid {pid} ({name}): released FREE 64.0 MiB DONTNEED 0 B "
            )),
            "{line}"
        );
        let rss = field(line, "; rss ", " lazyfree ");
        assert!(
            shows_between(rss, rss_anon - slack, vm_rss + slack),
            "rss {rss} vs RssAnon {rss_anon}, VmRSS {vm_rss} (±{slack}): {line}"
        );
        // LazyFree comes only from smaps_rollup, which system-wide runs do not read.
        assert_eq!(field(line, " lazyfree ", ";"), "?", "{line}");
    }
}

/// Past 4096 processes, exited ones are dropped from memtrace's model; what they released stays
/// in the plain line's totals, which never go down, and the line says how many left the list.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn totals_never_go_down_when_exited_processes_are_dropped() {
    if !privileged() {
        return;
    }
    let name = format!("drop{}", std::process::id());
    let mut workload = Workload::spawn_named(
        &name,
        &[
            "fork-many",
            "--children",
            "4200",
            "--hold-ms",
            "3000",
            "--child-dontneed-pages",
            "1",
        ],
    );
    let memtrace = OnPipe::spawn(&["--comm", &name, "--interval", "0.5", "--ring-size", "65536"]);
    workload.go();
    let record = workload.record();
    let ended = Instant::now();
    // Samples after the children were reaped drop the exited ones past the limit.
    memtrace.wait_for_lines(ended, 3);
    let lines = memtrace.interrupt();
    let released = (number(&record["children"]) * number(&record["child_dontneed_bytes"])) as f64;
    assert_eq!(released, (4200 * 4096) as f64);
    let totals: Vec<f64> = lines
        .iter()
        .map(|(_, line)| bytes_shown(field(line, " DONTNEED ", " (")).0)
        .collect();
    assert!(totals.is_sorted(), "totals went down: {lines:#?}");
    let (_, last) = lines.last().expect("interval lines");
    assert!(
        shows_between(field(last, " DONTNEED ", " ("), released, released),
        "{released} B released by the children: {last}"
    );
    assert!(
        last.contains(" no longer listed, still counted): "),
        "no process was dropped (more than 4096 should have been seen): {last}"
    );
}

/// Stopped (SIGSTOP) and continued, memtrace draws the next frame and goes on at its interval:
/// no burst of catch-up frames stamped with the same instant (whose rates would cover next to
/// no time and read as rates that never happened).
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn a_stopped_and_continued_run_draws_no_catch_up_frames() {
    if !privileged() {
        return;
    }
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("run sleep");
    let mut memtrace = Command::new(MEMTRACE)
        .args(["--pid", &sleeper.id().to_string(), "--interval", "0.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn memtrace");
    let screen = collect_lines(memtrace.stdout.take().expect("stdout"));
    let frames = |text: &str| text.lines().filter(|l| l.contains(" pid ")).count();
    wait_for(&screen, |text| frames(text) >= 2);
    let pid = memtrace.id() as i32;
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(2));
    let before = frames(&screen.lock().expect("lock"));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for(&screen, |text| frames(text) >= before + 3);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    assert!(memtrace.wait().expect("wait").success());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let text = screen.lock().expect("lock").clone();
    let stamps: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" pid "))
        .filter_map(|l| l.split('s').next()?.parse().ok())
        .collect();
    assert!(stamps.len() >= before + 3, "{text}");
    assert!(
        stamps.windows(2).all(|w| w[1] > w[0]),
        "every frame covers time of its own:\n{text}"
    );
}
