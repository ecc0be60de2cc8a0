//! apt-get, run so that concurrent runs on one machine do not fail each other.
//!
//! CI machines may run several jobs at once, each installing packages: dpkg's lock is then
//! taken for minutes. `install` waits for it instead of failing, and `update` (whose lists lock
//! apt does not wait for) is retried.

use std::{process::Command, thread, time::Duration};

use anyhow::bail;

use crate::tasks::{is_root, status};

/// How long `apt-get install` waits for another dpkg to finish.
const LOCK_TIMEOUT_SECS: u32 = 600;
/// `apt-get update` attempts, and the pause between them.
const UPDATE_ATTEMPTS: u32 = 5;
const UPDATE_PAUSE: Duration = Duration::from_secs(15);

/// A program a task needs on the host, and the Debian package that provides it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

/// Installs the packages of the `tools` that `find` cannot locate; `why` says who needs them.
pub fn ensure_tools(tools: &[Tool], find: impl Fn(&str) -> bool, why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|tool| !find(tool.program))
        .map(|tool| tool.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    if !is_root() || crate::bootstrap::which("apt-get").is_none() {
        bail!("{why} needs {packages}: install them (e.g. `sudo apt-get install -y {packages}`)");
    }
    eprintln!("xtask: installing {packages} with apt-get ({why} needs them)");
    update()?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .arg(format!("-oDPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"))
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if let Some(tool) = tools.iter().find(|tool| !find(tool.program)) {
        bail!(
            "apt-get installed {} but `{}` is still missing",
            tool.package,
            tool.program
        );
    }
    Ok(())
}

/// `apt-get update`, retried while another apt holds the lists lock.
fn update() -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match status(Command::new("apt-get").args(["update", "-qq"])) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= UPDATE_ATTEMPTS => return Err(e),
            Err(e) => {
                eprintln!("xtask: {e:#}; retrying in {}s", UPDATE_PAUSE.as_secs());
                thread::sleep(UPDATE_PAUSE);
                attempt += 1;
            }
        }
    }
}
