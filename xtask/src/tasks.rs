//! Build, run, test and lint.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where `program` is: on PATH, or in cargo's own bin directory (where `cargo install` put
/// bpf-linker, even when that directory is not on PATH, as under sudo).
pub fn which(program: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME").map(|home| PathBuf::from(home).join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(cargo_bin);
    let search = std::env::join_paths(dirs).ok()?;
    which::which_in(program, Some(search), workspace_root()).ok()
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    status(cargo().args([
        "build",
        "--release",
        "--package",
        "memtrace",
        "--bin",
        "memtrace",
    ]))?;
    let binary = workspace_root().join("target/release/memtrace");
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        eprintln!("xtask: memtrace needs root to load eBPF programs; running it through sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    let exit = cmd.args(args).status().context("cannot start memtrace")?;
    if !exit.success() {
        std::process::exit(exit.code().unwrap_or(1));
    }
    Ok(())
}

/// `cargo test` with `args`. The integration tests that load eBPF are `#[ignore]`d (so a plain
/// `cargo test` without root shows them as ignored, not passed); they run here as root, and
/// always under CI, where without root they fail rather than skip.
pub fn test(args: &[String]) -> anyhow::Result<()> {
    let privileged = is_root() || std::env::var_os("CI").is_some();
    if !privileged {
        eprintln!(
            "xtask: WARNING: not root: the integration tests (real eBPF) are IGNORED.\n\
             xtask: run `sudo -E cargo xtask test` to run them."
        );
    }
    let mut command = cargo();
    command.arg("test").args(args);
    if privileged {
        if !args.iter().any(|a| a == "--") {
            command.arg("--");
        }
        command.arg("--include-ignored");
    }
    status(&mut command)
}

pub fn lint() -> anyhow::Result<()> {
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // Default members only: the eBPF crate cannot build for the host.
    status(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate only builds for the BPF target, from its own target dir.
    status(
        cargo()
            .args([
                "clippy",
                "--package",
                "memtrace-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
            .env("RUSTC_BOOTSTRAP", "1"),
    )
}

/// Writes schema/memtrace.schema.json from the JSON line types: the unit test that checks the
/// checked-in copy writes it instead when MEMTRACE_WRITE_SCHEMA is set.
pub fn schema() -> anyhow::Result<()> {
    status(
        cargo()
            .args([
                "test",
                "--quiet",
                "--package",
                "memtrace",
                "--bin",
                "memtrace",
            ])
            .args([
                "--",
                "--exact",
                "output::json::tests::checked_in_schema_is_current",
            ])
            .env("MEMTRACE_WRITE_SCHEMA", "1"),
    )?;
    eprintln!("xtask: wrote schema/memtrace.schema.json");
    Ok(())
}

/// Runs a command, failing if it does.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let exit = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !exit.success() {
        bail!("{cmd:?} failed ({exit})");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?} failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
