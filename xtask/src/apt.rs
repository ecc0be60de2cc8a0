//! apt-get, run so that it neither breaks the machine nor fails because of another apt.
//!
//! Installs never remove a package (`--no-remove`): a test harness must not uninstall what
//! someone else relies on. When the release's own versions cannot be installed without
//! removals (e.g. bookworm's qemu-system-x86 7.2 next to a qemu-utils 10 from
//! bookworm-backports, which breaks it), they come from the release's backports instead, like
//! the packages in the way. CI machines may run several jobs at once, each installing
//! packages: installs wait for dpkg's lock and `apt-get update` is retried.
//!
//! `PrivateApt` is apt with its own sources list, lists and cache, for packages from other
//! suites or releases without touching the machine's sources.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::tasks::{capture, is_root, status, which};

/// How long `apt-get install` waits for another dpkg to finish.
const LOCK_TIMEOUT_SECS: u32 = 600;
/// `apt-get update` attempts, and the pause between them.
const UPDATE_ATTEMPTS: u32 = 5;
const UPDATE_PAUSE: Duration = Duration::from_secs(15);
const DEBIAN: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A program a task needs on the host, and the Debian package that provides it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

/// Installs the packages of the `tools` that `find` cannot locate; `why` says who needs them.
/// `dir` holds the private apt state used if backports are needed.
pub fn ensure_tools(
    tools: &[Tool],
    find: impl Fn(&str) -> bool,
    why: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|tool| !find(tool.program))
        .map(|tool| tool.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    if !is_root() || which("apt-get").is_none() {
        bail!("{why} needs {packages}: install them (e.g. `sudo apt-get install -y {packages}`)");
    }
    eprintln!("xtask: installing {packages} with apt-get ({why} needs them)");
    retry_update(|| status(Command::new("apt-get").args(["update", "-qq"])))?;
    if let Err(e) = status(install(&mut Command::new("apt-get"), &missing)) {
        eprintln!("xtask: {e:#}: trying the release's backports");
        install_from_backports(&missing, dir)?;
    }
    if let Some(tool) = tools.iter().find(|tool| !find(tool.program)) {
        bail!(
            "apt-get installed {} but `{}` is still missing",
            tool.package,
            tool.program
        );
    }
    Ok(())
}

/// Installs Debian `packages` from the machine's own sources: `apt-get update` (retried while
/// another apt holds the lists), then an install that never removes a package and waits for
/// dpkg's lock.
pub fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    retry_update(|| status(Command::new("apt-get").args(["update", "-qq"])))?;
    status(install(&mut Command::new("apt-get"), packages))
}

/// `apt-get install` of `packages`, never removing anything, waiting for dpkg's lock.
fn install<'a>(apt_get: &'a mut Command, packages: &[&str]) -> &'a mut Command {
    apt_get
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "--no-remove",
        ])
        .arg(format!("-oDPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"))
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
}

/// Installs `packages` from this Debian release's backports, the rest of what they need from
/// the release itself.
fn install_from_backports(packages: &[&str], dir: &Path) -> anyhow::Result<()> {
    let codename = debian_codename()?;
    let [updates, security, backports] =
        ["updates", "security", "backports"].map(|s| format!("{codename}-{s}"));
    let apt = PrivateApt::create(
        dir,
        &[
            Suite::debian(&codename),
            Suite::debian(&updates),
            Suite::security(&security),
            Suite::debian(&backports),
        ],
    )?;
    apt.update()?;
    status(install(
        apt.command("apt-get").args(["-t", &backports]),
        packages,
    ))
}

/// This machine's Debian release, e.g. `bookworm`, from /etc/os-release.
fn debian_codename() -> anyhow::Result<String> {
    let release = fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    codename_of(&release)
}

fn codename_of(os_release: &str) -> anyhow::Result<String> {
    let field = |name: &str| {
        os_release.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix('=')?;
            Some(value.trim_matches('"').to_owned())
        })
    };
    if field("ID").as_deref() != Some("debian") {
        bail!("not Debian: no backports to install from");
    }
    field("VERSION_CODENAME").context("/etc/os-release names no VERSION_CODENAME")
}

/// Runs an `apt-get update`, again while another apt holds the lists lock.
fn retry_update(update: impl Fn() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match update() {
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

/// A Debian suite on an archive, e.g. bullseye-security on the security archive.
pub struct Suite<'a> {
    archive: &'static str,
    name: &'a str,
}

impl<'a> Suite<'a> {
    pub const fn debian(name: &'a str) -> Self {
        Self {
            archive: DEBIAN,
            name,
        }
    }

    pub const fn security(name: &'a str) -> Self {
        Self {
            archive: SECURITY,
            name,
        }
    }
}

/// apt-get and apt-cache with their own sources, package lists and cache (under one
/// directory), so the machine's sources are neither read nor changed.
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    pub fn create(dir: &Path, suites: &[Suite]) -> anyhow::Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let sources: String = suites
            .iter()
            .map(|suite| {
                format!(
                    "deb [arch=amd64 signed-by={KEYRING}] {} {} main\n",
                    suite.archive, suite.name
                )
            })
            .collect();
        let list = dir.join("sources.list");
        fs::write(&list, sources).with_context(|| format!("cannot write {}", list.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Options that make apt read and write only under our directory. The machine's
    /// preferences (pinning) are ignored too: they are about the machine's own suites.
    fn options(&self) -> Vec<String> {
        let dir = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={dir}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={dir}/lists"),
            format!("-oDir::Cache={dir}/cache"),
            "-oDir::Etc::Preferences=/dev/null".into(),
            "-oDir::Etc::PreferencesParts=/dev/null".into(),
            // Only the Packages lists: no translations, no AppStream metadata.
            "-oAcquire::Languages=none".into(),
            "-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            // Our directories belong to whoever runs xtask, not to apt's sandbox user.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.options());
        cmd
    }

    pub fn update(&self) -> anyhow::Result<()> {
        retry_update(|| status(self.command("apt-get").args(["update", "-qq"])))
    }

    /// The packages `package`'s candidate version depends on, by name (the first of
    /// alternatives), in the order its Depends field lists them.
    pub fn depends(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let show = capture(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", package]),
        )?;
        let depends = show
            .lines()
            .find_map(|line| line.strip_prefix("Depends:"))
            .unwrap_or_default();
        Ok(depends
            .split(',')
            .filter_map(|dependency| dependency.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Downloads `packages` into `dir` (emptied of .debs first) and returns the .debs' paths.
    pub fn download(&self, packages: &[String], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for old in debs_in(dir)? {
            fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        status(
            self.command("apt-get")
                .args(["download", "-qq"])
                .args(packages)
                .current_dir(dir),
        )?;
        debs_in(dir)
    }
}

fn debs_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_only_for_debian_releases() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                        VERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(codename_of(bookworm).ok().as_deref(), Some("bookworm"));
        let ubuntu = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert!(codename_of(ubuntu).is_err());
    }
}
