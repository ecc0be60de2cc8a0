//! Real containers under podman: memtrace's own image run with exactly the privileges
//! deploy/daemonset.yaml declares, and workloads in containers traced from the host.
//!
//! Host only: the guests of `cargo xtask test --kernel` have no container runtime. podman here
//! needs runc and the cgroupfs manager (crun refuses this machine's hybrid cgroup layout) and
//! explicit rlimits (raising them is refused); the image comes from `cargo xtask image`, which
//! `cargo xtask test` runs first.

mod support;

use std::{
    io::{BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{MemCgroup, Memtrace, TraceInstance, Workload, privileged};

/// What `cargo xtask image` tags (xtask/src/image.rs).
const IMAGE: &str = "localhost/memtrace:latest";
/// The workload in an image of its own, imported from a root filesystem (no registry here).
const WORKLOAD_IMAGE: &str = "localhost/memtrace-workload:test";

/// `podman` with this machine's runtime and cgroup manager.
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    // conmon leaves a file named `oom` in its working directory when a container is
    // OOM-killed: not in the source tree.
    command.current_dir(env!("CARGO_TARGET_TMPDIR"));
    command
}

/// Runs podman to completion; its stdout, or a panic with its stderr.
fn podman_ok(args: &[&str]) -> String {
    let output = podman().args(args).output().expect("run podman");
    assert!(
        output.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `podman run` options every container here needs (DESIGN.md §6): rlimits cannot be raised.
const RLIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// A container removed (killed first) when dropped.
struct Container {
    name: String,
}

impl Container {
    fn named(tag: &str) -> Self {
        let name = format!("memtrace-test-{tag}-{}", std::process::id());
        let _ = podman().args(["rm", "--force", &name]).output();
        Self { name }
    }

    /// A field of `podman inspect` (a Go template such as `{{.Id}}`).
    fn inspect(&self, template: &str) -> String {
        podman_ok(&["inspect", "--format", template, &self.name])
    }

    fn id(&self) -> String {
        self.inspect("{{.Id}}")
    }

    /// Its init process's pid on the host.
    fn host_pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().expect("a pid")
    }

    fn logs(&self) -> String {
        let output = podman()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", &self.name]).output();
    }
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet's privileges, read from the manifest itself.

/// What deploy/daemonset.yaml asks of the node, as podman options, and memtrace's arguments.
struct Manifest {
    podman_options: Vec<String>,
    args: Vec<String>,
    container_port: u16,
}

impl Manifest {
    /// Reads the manifest and translates every privilege it declares; an entry the test does
    /// not know how to apply fails the test, so the manifest never declares more than was run.
    fn read() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
        let text = std::fs::read_to_string(&path).expect("read deploy/daemonset.yaml");
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .collect();
        let mut options = Vec::new();
        let value = |key: &str| -> Option<&str> {
            lines
                .iter()
                .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let list = |key: &str| -> Vec<String> {
            value(key).map_or_else(Vec::new, |v| {
                serde_json::from_str(v).unwrap_or_else(|e| panic!("{key}: {v}: {e}"))
            })
        };
        assert_eq!(value("hostPID"), Some("true"), "the agent needs hostPID");
        options.extend(["--pid".into(), "host".into()]);
        for forbidden in [
            "privileged",
            "hostNetwork",
            "hostIPC",
            "allowPrivilegeEscalation",
        ] {
            assert!(
                value(forbidden).is_none_or(|v| v == "false"),
                "{forbidden} is declared: this test does not grant it"
            );
        }
        assert_eq!(list("drop"), ["ALL"], "capabilities are added to none");
        let added = list("add");
        assert!(!added.is_empty(), "no capability added");
        options.extend(["--cap-drop".into(), "ALL".into()]);
        options.extend(["--cap-add".into(), added.join(",")]);
        if let Some(user) = value("runAsUser") {
            options.extend(["--user".into(), user.to_owned()]);
        }
        if value("readOnlyRootFilesystem") == Some("true") {
            options.push("--read-only".into());
        }
        match value("seccompProfile") {
            Some("{type: Unconfined}") => {
                options.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
            }
            Some(other) => panic!("seccompProfile {other}: not applied by this test"),
            None => {}
        }
        options.extend(volumes(&lines));
        let container_port = value("- {name: metrics, containerPort")
            .and_then(|v| v.split(',').next()?.trim().parse().ok())
            .expect("a metrics containerPort");
        Self {
            podman_options: options,
            args: list("args"),
            container_port,
        }
    }
}

/// `-v HOST:CONTAINER[:ro]` for every volumeMount, from its hostPath volume.
fn volumes(lines: &[&str]) -> Vec<String> {
    let field = |entry: &str, key: &str| -> Option<String> {
        let start = entry.find(&format!("{key}: "))? + key.len() + 2;
        let rest = &entry[start..];
        Some(rest.split([',', '}']).next()?.trim().to_owned())
    };
    let mut options = Vec::new();
    for entry in lines.iter().filter(|l| l.contains("mountPath:")) {
        let name = field(entry, "name").expect("a volumeMount's name");
        let mount = field(entry, "mountPath").expect("a mountPath");
        let read_only = field(entry, "readOnly").as_deref() == Some("true");
        // `- name: NAME` then `hostPath: {path: HOST}` on the next line.
        let host = lines
            .windows(2)
            .find(|w| w[0].trim() == format!("- name: {name}"))
            .and_then(|w| field(w[1], "path"))
            .unwrap_or_else(|| panic!("volume {name} is not a hostPath this test knows"));
        let mode = if read_only { ":ro" } else { "" };
        options.extend(["-v".into(), format!("{host}:{mount}{mode}")]);
    }
    assert!(
        !options.is_empty(),
        "no volumes: tracefs and BTF are needed"
    );
    options
}

/// A port free on loopback now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The metrics page, or None while nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the series of `family` whose line contains every one of `parts`.
fn series(page: &str, family: &str, parts: &[&str]) -> Option<u64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| parts.iter().all(|part| l.contains(part)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// memtrace's image, run as the DaemonSet runs it (its manifest's privileges, arguments and
/// port), counts a host process's madvise calls exactly, and serves them at /metrics to a
/// scrape from the host over loopback.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn the_image_runs_with_exactly_the_daemonsets_privileges() {
    if !privileged() {
        return;
    }
    let exists = podman()
        .args(["image", "exists", IMAGE])
        .status()
        .expect("run podman");
    assert!(
        exists.success(),
        "no {IMAGE}: build it with `cargo xtask image` (`cargo xtask test` does)"
    );
    let manifest = Manifest::read();
    let port = free_port();
    let agent = Container::named("daemonset");
    let publish = format!("127.0.0.1:{port}:{}", manifest.container_port);
    let mut args: Vec<&str> = vec!["run", "--detach", "--name", &agent.name];
    args.extend(RLIMITS);
    args.extend(manifest.podman_options.iter().map(String::as_str));
    args.extend(["--publish", &publish, IMAGE]);
    args.extend(manifest.args.iter().map(String::as_str));
    podman_ok(&args);
    let deadline = Instant::now() + Duration::from_secs(90);
    while scrape(port).is_none() {
        assert!(
            Instant::now() < deadline,
            "no /metrics on port {port}; memtrace said:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        agent.logs().contains("memtrace: attached"),
        "{}",
        agent.logs()
    );

    // In a cgroup of its own: the DaemonSet's page has per-cgroup series (per-process ones are
    // opt-in), and that cgroup's are the workload's alone. It joins before it execs, so memtrace
    // meets it there (memtrace settles a process's cgroup when it first meets it, for good).
    let Some(cgroup) = MemCgroup::new("daemonset", 1 << 30) else {
        return;
    };
    let mut workload = Workload::spawn_joined(
        &cgroup.path,
        &["madvise", "--op", "dontneed:41:1", "--op", "free:29:1"],
    );
    // As memtrace in the container names it: below the root, or from a cgroup namespace of
    // its own, as `/..`-prefixed.
    let label = format!("{}\"", cgroup.name());
    workload.go();
    let record = workload.record();
    let expected = |advice: u32| {
        record["advice"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["advice"] == advice))
            .and_then(|e| e["calls"].as_u64())
    };
    assert_eq!((expected(4), expected(8)), (Some(41), Some(29)), "{record}");
    // The page is rebuilt every second: wait for the one that has the exited workload's calls.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = scrape(port).expect("metrics page");
        let of_cgroup = |family: &str, advice: &str| {
            series(&page, family, &[&label, &format!("advice=\"{advice}\"")])
        };
        let calls = |advice| of_cgroup("memtrace_madvise_calls_total", advice);
        if (calls("DONTNEED"), calls("FREE")) == (Some(41), Some(29)) {
            assert_eq!(
                of_cgroup("memtrace_madvise_bytes_total", "FREE"),
                Some(29 * 4096)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cgroup {}: DONTNEED {:?}, FREE {:?} on the page:\n{}",
            cgroup.name(),
            calls("DONTNEED"),
            calls("FREE"),
            page.lines()
                .filter(|l| l.starts_with("memtrace_madvise_calls_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Running as the DaemonSet does, memtrace was refused nothing it reads.
    let logs = agent.logs();
    for refusal in ["Permission denied", "Operation not permitted", "needs root"] {
        assert!(!logs.contains(refusal), "{refusal} in:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads in containers.

/// The workload image: memtrace-workload and the libraries it links, at their host paths, and
/// an empty /tmp, imported as a root filesystem. Built once per test binary.
fn workload_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("workload-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("tmp")).expect("create the rootfs");
        for file in
            std::iter::once(PathBuf::from(support::WORKLOAD)).chain(libraries(support::WORKLOAD))
        {
            let inside = root.join(file.strip_prefix("/").expect("an absolute path"));
            std::fs::create_dir_all(inside.parent().expect("a parent")).expect("mkdir");
            std::fs::copy(&file, &inside)
                .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
        }
        let tarball = root.with_extension("tar");
        let tar = Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(&tarball)
            .arg("--directory")
            .arg(&root)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(tar.success(), "tar failed");
        podman_ok(&["import", &tarball.to_string_lossy(), WORKLOAD_IMAGE]);
        let _ = std::fs::remove_file(&tarball);
        let _ = std::fs::remove_dir_all(&root);
    });
    WORKLOAD_IMAGE
}

/// The shared libraries `binary` loads, per ldd (the loader included).
fn libraries(binary: &str) -> Vec<PathBuf> {
    let output = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A workload running in a container of its own (`podman run -i`), ready and waiting for go.
struct Contained {
    container: Container,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Its pid on the host (the container's init).
    pid: u32,
}

impl Contained {
    /// Starts `memtrace-workload ARGS` in a container with extra `podman run` options.
    fn start(tag: &str, options: &[&str], args: &[&str]) -> Self {
        let container = Container::named(tag);
        let mut child = podman()
            .args(["run", "--interactive", "--name", &container.name])
            .args(RLIMITS)
            .args(options)
            .arg(workload_image())
            .arg(support::WORKLOAD)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("podman run");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let ready = read_json_line(&mut stdout).expect("the workload's ready line");
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(
            ready["pid"], 1,
            "the workload is its container's init: {ready}"
        );
        let pid = container.host_pid();
        Self {
            container,
            child,
            stdin,
            stdout,
            pid,
        }
    }

    fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go twice");
        stdin.write_all(b"go\n").expect("send go");
    }

    /// Its record, once it exited (None if it was killed first), and its container, kept
    /// for `podman inspect` until dropped.
    fn finish(mut self) -> (Option<Value>, std::process::ExitStatus, Container) {
        let record = read_json_line(&mut self.stdout);
        let status = self.child.wait().expect("wait for podman run");
        (record, status, self.container)
    }
}

fn read_json_line(reader: &mut impl std::io::BufRead) -> Option<Value> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

const MEMCG_BEGIN: &str = "vmscan/mm_vmscan_memcg_reclaim_begin";
const MEMCG_END: &str = "vmscan/mm_vmscan_memcg_reclaim_end";

/// `(stalls, pages reclaimed)` in an independent tracefs record of one task's memcg reclaim.
fn memcg_stalls(oracle: &TraceInstance) -> (u64, u64) {
    let (mut stalls, mut reclaimed) = (0, 0);
    for line in oracle.lines() {
        if let Some((_, fields)) = line.split_once("mm_vmscan_memcg_reclaim_end:") {
            stalls += 1;
            reclaimed += support::trace_number(fields, "nr_reclaimed=");
        }
    }
    (stalls, reclaimed)
}

/// Three containers, one system-wide memtrace on the host: a container's madvise calls and
/// bytes are counted exactly (against the workload's own record), a container at its memory
/// limit stalls in memcg reclaim exactly as often as an independent tracefs count says, and
/// the one the OOM killer kills (podman inspect: OOMKilled) is named with its container's
/// cgroup.
#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn containers_are_traced_exactly() {
    if !privileged() {
        return;
    }
    let mut releaser = Contained::start(
        "releaser",
        &[],
        &["madvise", "--op", "dontneed:41:1", "--op", "free:29:1"],
    );
    let limit = ["--memory", "128m", "--memory-swap", "128m"];
    let mut reader = Contained::start("reader", &limit, &["page-cache", "--mib", "768"]);
    let small = ["--memory", "100m", "--memory-swap", "100m"];
    let mut hog = Contained::start("hog", &small, &["hog", "--mib", "256"]);
    let filter = format!("common_pid == {}", reader.pid);
    let oracle = TraceInstance::new(
        "podman-stalls",
        &[(MEMCG_BEGIN, filter.clone()), (MEMCG_END, filter)],
    );
    let mut kernel_log = KernelLog::open();
    // System-wide, every process's calls stream as JSON lines: read them as they come (a
    // full pipe would stall memtrace until its ring buffer overflows), keeping the summary.
    let mut memtrace = Memtrace::attach(&[
        "--comm",
        "memtrace-worklo",
        "--top",
        "10000",
        "--ring-size",
        "65536",
    ]);
    let summary = keep_summary(memtrace.take_stdout());
    // And as the DaemonSet runs it: the page's per-cgroup series (its stdout, with no line per
    // event, only the start and the summary).
    let port = free_port();
    let exporter = Memtrace::attach(&["--no-events", "--prometheus", &port.to_string()]);
    let (releaser_pid, reader_pid, hog_pid) = (releaser.pid, reader.pid, hog.pid);
    let hog_id = hog.container.id();
    let ids = [
        (releaser_pid, releaser.container.id()),
        (reader_pid, reader.container.id()),
    ];
    releaser.go();
    reader.go();
    hog.go();
    let (record, status, _releaser) = releaser.finish();
    assert!(status.success(), "releaser: {status}");
    let record = record.expect("the releaser's record");
    let (read, status, _reader) = reader.finish();
    assert!(status.success(), "reader: {status}");
    assert_eq!(
        read.expect("the reader's record")["bytes_read"],
        768u64 << 20
    );
    let (_, status, _hog) = hog.finish();
    assert_eq!(status.code(), Some(137), "the hog was killed");
    // podman's OOMKilled stays false with runc on cgroup v1: the kernel's own log is the truth.
    let killed = kernel_log.oom_kills();
    let hog_memcg = format!("/libpod_parent/libpod-{hog_id}");
    assert!(
        killed.contains(&(hog_pid, hog_memcg.clone())),
        "the kernel log names no kill of {hog_pid} in {hog_memcg}: {killed:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    memtrace.interrupt();
    let output = memtrace.finish();
    assert!(output.status.success(), "{}", output.stderr);
    let (stalls, reclaimed) = memcg_stalls(&oracle);
    // A container's series: its cgroup, and the id and runtime `podman inspect` gives.
    let labels = |id: &str| {
        format!(
            r#"cgroup="/libpod_parent/libpod-{id}",container_id="{id}",container_runtime="podman",pod_uid="",pod_qos="""#
        )
    };
    let releaser_labels = labels(&ids[0].1);
    let expected = [
        (
            "memtrace_madvise_calls_total",
            releaser_labels.clone(),
            r#"advice="DONTNEED""#,
            41,
        ),
        (
            "memtrace_madvise_calls_total",
            releaser_labels,
            r#"advice="FREE""#,
            29,
        ),
        (
            "memtrace_reclaim_stall_seconds_count",
            labels(&ids[1].1),
            r#"kind="memcg""#,
            stalls,
        ),
        ("memtrace_cgroup_oom_kills_total", labels(&hog_id), "", 1),
    ];
    let found = |page: &str| {
        expected
            .iter()
            .map(|(family, labels, more, _)| series(page, family, &[&format!("{{{labels}"), more]))
            .collect::<Vec<_>>()
    };
    let want: Vec<Option<u64>> = expected.iter().map(|e| Some(e.3)).collect();
    // Refreshed once a second: until it shows what the containers did.
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = scrape(port).unwrap_or_default();
        if found(&page) == want || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    exporter.interrupt();
    assert!(exporter.finish().status.success());
    assert_eq!(found(&page), want, "{page}");
    let summary = summary
        .join()
        .expect("the reader thread")
        .expect("a summary line");
    assert_eq!(
        summary["lost"]["total"], 0,
        "exact counts need every record"
    );
    let process = |pid: u32| {
        summary["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
            .unwrap_or_else(|| panic!("pid {pid} missing from the summary"))
    };

    let releaser = process(releaser_pid);
    assert_eq!(
        support::advice_totals(releaser, 4),
        Some((41, 0, 41 * 4096))
    );
    assert_eq!(
        support::advice_totals(releaser, 8),
        Some((29, 0, 29 * 4096))
    );
    assert_eq!(record["advice"].as_array().map(Vec::len), Some(2));

    assert!(
        stalls > 50,
        "the 128 MiB limit should force reclaim: {stalls}"
    );
    let memcg = &process(reader_pid)["reclaim"]["memcg"];
    assert_eq!(
        (&memcg["count"], &memcg["nr_reclaimed"]),
        (&json!(stalls), &json!(reclaimed)),
        "{memcg}"
    );

    let kills: Vec<&Value> = summary["oom_kills"]
        .as_array()
        .expect("oom_kills")
        .iter()
        .filter(|k| k["pid"] == hog_pid)
        .collect();
    assert_eq!(kills.len(), 1, "{}", summary["oom_kills"]);
    assert_eq!(kills[0]["cgroup"], hog_memcg.as_str(), "{}", kills[0]);
    assert_eq!(
        (
            &kills[0]["container"]["runtime"],
            &kills[0]["container"]["id"]
        ),
        (&json!("podman"), &json!(hog_id)),
        "{}",
        kills[0]
    );
    // Every process names its container (the id `podman inspect` gives), its cgroup, and its
    // pid inside the container.
    for (pid, id) in ids {
        let process = process(pid);
        assert_eq!(
            (&process["container"], &process["pod"], &process["nspid"]),
            (
                &json!({"runtime": "podman", "id": id}),
                &json!(null),
                &json!(1)
            ),
            "{process}"
        );
        assert_eq!(process["cgroup"], format!("/libpod_parent/libpod-{id}"));
    }
}

/// The kernel's log from now on (/dev/kmsg, read without blocking).
struct KernelLog(std::fs::File);

impl KernelLog {
    fn open() -> Self {
        use std::{io::Seek as _, os::unix::fs::OpenOptionsExt as _};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("open /dev/kmsg");
        file.seek(std::io::SeekFrom::End(0))
            .expect("seek to the log's end");
        Self(file)
    }

    /// `(pid, task_memcg)` of every `oom-kill:` record since [`KernelLog::open`].
    fn oom_kills(&mut self) -> Vec<(u32, String)> {
        let mut kills = Vec::new();
        let mut record = vec![0u8; 8192];
        loop {
            match self.0.read(&mut record) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&record[..n]);
                    let Some((_, message)) = text.split_once(';') else {
                        continue;
                    };
                    let Some(fields) = message.trim().strip_prefix("oom-kill:") else {
                        continue;
                    };
                    let field = |key: &str| {
                        fields
                            .split(',')
                            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    };
                    if let (Some(pid), Some(memcg)) = (field("pid"), field("task_memcg")) {
                        kills.push((pid.parse().expect("a pid"), memcg.to_owned()));
                    }
                }
                // EAGAIN: nothing more; EPIPE: records overwritten meanwhile, read on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        kills
    }
}

/// Reads memtrace's JSON lines as they come, in a thread; gives the summary line at the end.
fn keep_summary(stdout: ChildStdout) -> std::thread::JoinHandle<Option<Value>> {
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.starts_with(r#"{"type":"summary""#))
            .last()
            .and_then(|line| serde_json::from_str(&line).ok())
    })
}
