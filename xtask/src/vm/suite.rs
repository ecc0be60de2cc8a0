//! The integration tests a guest runs: built on the host with cargo, listed per test binary on
//! the host (listing needs no privileges), then run one by one in the guest.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::tasks::{capture, cargo};

/// What `cargo test --no-run` built for the integration tests.
pub struct Build {
    pub binaries: Vec<TestBinary>,
    /// The workspace's own programs the tests run (CARGO_BIN_EXE_*), at their build paths.
    pub programs: Vec<PathBuf>,
    /// Where memtrace/tests/golang.rs keeps the Go programs its toolchain matrix built (under
    /// CARGO_TARGET_TMPDIR): a guest gets these, not the toolchains (~1.5 GiB) that built them.
    pub go_programs: PathBuf,
}

/// [`Build::go_programs`] below the target directory.
const GO_PROGRAMS: &str = "tmp/go-toolchains/built";
/// Tests that make on the host what the guests' tests need and cannot make there (a guest has
/// neither pip nor the Go toolchains): test binary, test name. Run before the root image is
/// made, so a fresh checkout's guest run works without a host run first.
const HOST_PREPARATION: [(&str, &str); 1] = [("golang", "prepare_go_builds")];

/// One integration test target (`memtrace/tests/madvise.rs` → `madvise`).
pub struct TestBinary {
    pub target: String,
    pub path: PathBuf,
    /// Its package's directory: cargo runs test binaries from there, and fixtures the tests
    /// read at run time live below it.
    pub package_dir: PathBuf,
}

/// One test of one binary.
pub struct TestCase {
    pub binary: usize,
    pub name: String,
    pub ignored: bool,
}

/// Builds every integration test target of the default members (the same profile and
/// artifacts as a host `cargo test`, so the two share one build).
pub fn build() -> anyhow::Result<Build> {
    let json = capture(cargo().args([
        "test",
        "--test",
        "*",
        "--no-run",
        // Quiet: only the JSON messages this reads, no progress lines among them.
        "--quiet",
        "--message-format=json-render-diagnostics",
    ]))?;
    let metadata = capture(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let metadata: Value = serde_json::from_str(&metadata).context("cargo metadata")?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let mut build = Build {
        binaries: Vec::new(),
        programs: Vec::new(),
        go_programs: Path::new(target).join(GO_PROGRAMS),
    };
    for message in json
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let kinds = &message["target"]["kind"];
        if kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            build.binaries.push(test_binary(&message, executable)?);
        } else {
            build.programs.push(PathBuf::from(executable));
        }
    }
    build.binaries.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(build)
}

fn test_binary(message: &Value, executable: &str) -> anyhow::Result<TestBinary> {
    let manifest = message["manifest_path"]
        .as_str()
        .context("cargo reported an artifact without manifest_path")?;
    Ok(TestBinary {
        target: message["target"]["name"].as_str().unwrap_or("?").to_owned(),
        path: PathBuf::from(executable),
        package_dir: Path::new(manifest)
            .parent()
            .context("manifest_path has no parent")?
            .to_owned(),
    })
}

/// Runs the [`HOST_PREPARATION`] tests on the host, failing if one does.
pub fn prepare_on_host(build: &Build) -> anyhow::Result<()> {
    for (target, name) in HOST_PREPARATION {
        let binary = build
            .binaries
            .iter()
            .find(|b| b.target == target)
            .with_context(|| format!("no test binary {target} to prepare the guests with"))?;
        eprintln!("xtask: preparing the guests' Go builds on the host ({target}/{name})");
        crate::tasks::status(
            Command::new(&binary.path)
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .current_dir(&binary.package_dir),
        )?;
    }
    Ok(())
}

/// Test binaries that run on the host only, and why.
const HOST_ONLY: [(&str, &str); 1] = [(
    "podman",
    "the guest has no container runtime (podman, conmon, runc, container storage; and Debian's \
     cloud kernels build overlayfs as a module, which the guest does not load)",
)];

/// Single tests that run on the host only, and why: `(binary, test, why)`.
const HOST_ONLY_TESTS: [(&str, &str, &str); 6] = [
    ("go_runtime", "runtime_view_with_go1_21", GO_RELEASES),
    ("go_runtime", "runtime_view_with_go1_22", GO_RELEASES),
    ("go_runtime", "runtime_view_with_go1_23", GO_RELEASES),
    ("go_runtime", "runtime_view_with_go1_24", GO_RELEASES),
    ("go_runtime", "runtime_view_with_go1_25", GO_RELEASES),
    ("go_runtime", "runtime_view_with_go1_26", GO_RELEASES),
];
/// The host reads every Go release; the guests Debian's Go and the newest (DWARF 4 and 5),
/// for what the kernel provides, at about 3 minutes a release under TCG.
const GO_RELEASES: &str = "where a Go release keeps its heap figures is the binary's fact, not \
     the kernel's; the guests read Debian's Go and the newest release (process_vm_readv, auxv, \
     /proc)";

/// The tests of every binary that `filters` (libtest arguments, e.g. a name substring)
/// select, in order, with whether each is `#[ignore]`d.
pub fn list(build: &Build, filters: &[String]) -> anyhow::Result<Vec<TestCase>> {
    let mut cases = Vec::new();
    for (index, binary) in build.binaries.iter().enumerate() {
        if let Some((_, why)) = HOST_ONLY.iter().find(|(name, _)| *name == binary.target) {
            eprintln!("xtask: {} tests run on the host only: {why}", binary.target);
            continue;
        }
        let ignored: HashSet<String> = list_binary(binary, filters, true)?.into_iter().collect();
        for name in list_binary(binary, filters, false)? {
            let host_only = HOST_ONLY_TESTS
                .iter()
                .find(|(target, test, _)| *target == binary.target && *test == name);
            if let Some((_, _, why)) = host_only {
                eprintln!(
                    "xtask: {}/{name} runs on the host only: {why}",
                    binary.target
                );
                continue;
            }
            cases.push(TestCase {
                binary: index,
                ignored: ignored.contains(&name),
                name,
            });
        }
    }
    Ok(cases)
}

/// `BINARY --list --format terse` prints `name: test` per test.
fn list_binary(
    binary: &TestBinary,
    filters: &[String],
    ignored_only: bool,
) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new(&binary.path);
    cmd.args(["--list", "--format", "terse"])
        .args(filters)
        .current_dir(&binary.package_dir);
    if ignored_only {
        cmd.arg("--ignored");
    }
    let listing = capture(&mut cmd)?;
    Ok(listing
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}
