//! `cargo xtask image`: the container image deploy/daemonset.yaml runs, built from
//! deploy/Dockerfile without pulling anything: memtrace built static (the musl target, its eBPF
//! programs embedded), alone in a `FROM scratch` image, built with podman.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{
    apt::{self, Tool},
    tasks::{capture, cargo, is_root, status, which, workspace_root},
};

/// A static binary needs nothing from the image: no libc, no loader.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The tag `cargo xtask image` gives, and the one memtrace/tests/podman.rs runs.
pub const DEFAULT_TAG: &str = "localhost/memtrace:latest";

const PODMAN: [Tool; 1] = [Tool {
    program: "podman",
    package: "podman",
}];

pub struct Options {
    pub tag: String,
    /// Also write the image as an OCI archive here (to load or push elsewhere).
    pub archive: Option<PathBuf>,
}

pub fn build(options: &Options) -> anyhow::Result<()> {
    ensure_target()?;
    let root = workspace_root();
    apt::ensure_tools(
        &PODMAN,
        |program| which(program).is_some(),
        "cargo xtask image",
        &root.join("target/apt"),
    )?;
    status(cargo().args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--package",
        "memtrace",
        "--bin",
        "memtrace",
    ]))?;
    // The build context holds the binary alone: nothing else of the tree reaches the image.
    let context = root.join("target/image");
    fs::create_dir_all(&context).with_context(|| format!("cannot create {}", context.display()))?;
    let binary = root.join("target").join(TARGET).join("release/memtrace");
    fs::copy(&binary, context.join("memtrace"))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    // `memtrace 0.1.0`: the image is labelled with the version it holds.
    let version = capture(Command::new(&binary).arg("--version"))?;
    let version = version.split_whitespace().nth(1).unwrap_or("unknown");
    status(
        Command::new("podman")
            .args(["build", "--pull=never", "--file"])
            .arg(root.join("deploy/Dockerfile"))
            .arg("--build-arg")
            .arg(format!("VERSION={version}"))
            .args(["--tag", &options.tag])
            .arg(&context),
    )?;
    let id = capture(
        Command::new("podman")
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .arg(&options.tag),
    )?;
    eprintln!("xtask: built {} ({})", options.tag, id.trim());
    if let Some(archive) = &options.archive {
        let _ = fs::remove_file(archive);
        status(
            Command::new("podman")
                .args(["save", "--format", "oci-archive", "--output"])
                .arg(archive)
                .arg(&options.tag),
        )?;
        eprintln!("xtask: wrote {}", archive.display());
    }
    Ok(())
}

/// Builds the image memtrace/tests/podman.rs runs, so the host's tests run the current code.
/// Not root: the privileged tests skip, and podman needs root here.
pub fn for_tests() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    build(&Options {
        tag: DEFAULT_TAG.to_owned(),
        archive: None,
    })
}

/// The musl target's standard library, from rustup (the pinned toolchain's).
fn ensure_target() -> anyhow::Result<()> {
    let installed = capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|t| t == TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {TARGET} target (a static memtrace for the image)");
    status(Command::new("rustup").args(["target", "add", TARGET]))
}
