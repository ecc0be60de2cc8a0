//! Installs what building memtrace needs, idempotently.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    apt,
    tasks::{capture, is_root, status, which},
};

pub fn run() -> anyhow::Result<()> {
    let llvm_major = rustc_llvm_major()?;
    ensure_rust_src()?;
    let llvm_prefix = ensure_llvm(llvm_major)?;
    ensure_bpf_linker(llvm_major, &llvm_prefix)?;
    ensure_tracefs();
    Ok(())
}

/// The LLVM major version of the pinned rustc: bpf-linker must be built against the same one.
fn rustc_llvm_major() -> anyhow::Result<u32> {
    let info = capture(Command::new("rustc").arg("-vV"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .context("`rustc -vV` does not say which LLVM it uses")
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = capture(Command::new("rustup").args(["component", "list", "--installed"]))?;
    if installed.lines().any(|c| c.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component (the eBPF target builds core from source)");
    status(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn ensure_llvm(major: u32) -> anyhow::Result<PathBuf> {
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{major}"));
    if prefix.join("bin/llvm-config").exists() {
        return Ok(prefix);
    }
    let packages = [format!("llvm-{major}-dev"), format!("libclang-{major}-dev")];
    if !is_root() || which("apt-get").is_none() {
        bail!(
            "LLVM {major} development files are missing: install {} (e.g. `sudo apt-get install -y {}`) and retry",
            packages.join(" and "),
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    apt::install_packages(&packages)?;
    if !prefix.join("bin/llvm-config").exists() {
        bail!(
            "apt-get installed {} but {} has no llvm-config",
            packages.join(" "),
            prefix.display()
        );
    }
    Ok(prefix)
}

/// bpf-linker links the eBPF object; it is usable only when linked against `major`.
fn ensure_bpf_linker(major: u32, llvm_prefix: &Path) -> anyhow::Result<()> {
    if let Some(linker) = which("bpf-linker")
        && linked_llvm_major(&linker) == Some(major)
    {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker against LLVM {major} (about a minute)");
    status(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .arg("--force")
            .env("LLVM_PREFIX", llvm_prefix),
    )
}

/// The libLLVM major a binary links dynamically, per ldd (`libLLVM.so.22.1` → 22).
fn linked_llvm_major(binary: &Path) -> Option<u32> {
    let libs = capture(Command::new("ldd").arg(binary)).ok()?;
    libs.lines()
        .find_map(|line| line.trim().strip_prefix("libLLVM"))
        .and_then(|rest| rest.split(".so.").nth(1))
        .and_then(|version| version.split(['.', ' ']).next()?.parse().ok())
        .or_else(|| {
            libs.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("libLLVM-")?
                    .split('.')
                    .next()?
                    .parse()
                    .ok()
            })
        })
}

/// Programs the tests run: `go` builds the Go test programs (`gcc` their cgo builds),
/// `bpftrace` is their independent madvise count, `objcopy` splits debug files off a Go binary
/// as Debian's packaging does, prometheus-node-exporter is the real Debian Go daemon whose own
/// gauges check memtrace's reading of its runtime, `bpftool` reads the kernel's BTF
/// independently of memtrace's own reader, and `promtool` (Debian's `prometheus`) validates
/// the metrics page; `runc` is the runtime the container tests give podman (Debian's
/// default, crun, refuses a hybrid cgroup layout such as this project's CI machine's).
/// Installed from Debian when missing; only `cargo xtask test` needs them.
/// When they cannot be installed the tests that need them skip, except under CI, where they
/// must run.
const TEST_TOOLS: [(&str, &str); 8] = [
    ("go", "golang-go"),
    ("gcc", "gcc"),
    ("bpftrace", "bpftrace"),
    ("objcopy", "binutils"),
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("bpftool", "bpftool"),
    ("promtool", "prometheus"),
    ("runc", "runc"),
];

pub fn ensure_test_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(program, _)| which(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    if !is_root() || which("apt-get").is_none() {
        let advice = format!("install {packages} (e.g. `sudo apt-get install -y {packages}`)");
        if std::env::var_os("CI").is_some() {
            bail!("the tests need {packages} and CI is set: {advice}");
        }
        eprintln!(
            "xtask: WARNING: {packages} missing: tests that need them will be SKIPPED; {advice}"
        );
        return Ok(());
    }
    eprintln!(
        "xtask: installing {packages} with apt-get (the tests build and trace real Go programs and check memtrace against independent tools)"
    );
    apt::install_packages(&missing)?;
    if let Some((program, package)) = TEST_TOOLS.iter().find(|(p, _)| which(p).is_none()) {
        bail!("apt-get installed {package} but `{program}` is not on PATH");
    }
    Ok(())
}

/// tracefs must be mounted for tracepoints to attach; mount it when we may.
fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return;
    }
    if !is_root() {
        eprintln!(
            "xtask: warning: tracefs is not mounted; run `sudo mount -t tracefs nodev /sys/kernel/tracing`"
        );
        return;
    }
    if let Err(e) =
        status(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
    {
        eprintln!("xtask: warning: could not mount tracefs: {e:#}");
    }
}
