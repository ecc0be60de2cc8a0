//! The guest kernels of the matrix: Debian's cloud kernels (BTF, tracefs, NVMe and ext4 built
//! in, so they boot from a disk without modules or an initramfs).
//!
//! Packages come from `apt-get download` through a private apt configuration (own sources
//! list, lists and cache under target/kernels), so the machine's own sources are never read or
//! changed and any host with apt can fetch any Debian release; they are unpacked with
//! `dpkg-deb -x`, never installed. Once unpacked a kernel is reused without touching the
//! network: delete its directory to pick up a newer one.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::recreate_dir;
use crate::{
    apt::{PrivateApt, Suite},
    tasks::{capture, status},
};

/// The metapackage that depends on a release's newest cloud kernel.
const CLOUD_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Written last when a kernel is unpacked: its presence marks a complete cache entry.
const STAMP: &str = "package.txt";

/// A kernel the harness can boot.
pub struct GuestKernel {
    /// What `--kernel` calls it.
    pub name: &'static str,
    /// The version prefix its package must carry: guards against a suite moving to another
    /// kernel series behind our back.
    series: &'static str,
    /// Where its package comes from; the newest version across them wins.
    suites: [Suite<'static>; 3],
    /// Whether the guest also gets the kernel's headers, as a Debian system with its
    /// linux-headers package installed: bpftrace 0.17 cannot use 5.10's BTF (`bpftrace
    /// --info`: "btf: no"), so tracepoint arguments (`args->…`) need the headers there.
    headers: bool,
}

pub const GUESTS: [GuestKernel; 3] = [
    GuestKernel {
        name: "debian-5.10",
        series: "5.10.",
        suites: [
            Suite::debian("bullseye"),
            Suite::debian("bullseye-updates"),
            Suite::security("bullseye-security"),
        ],
        headers: true,
    },
    GuestKernel {
        name: "debian-6.1",
        series: "6.1.",
        suites: [
            Suite::debian("bookworm"),
            Suite::debian("bookworm-updates"),
            Suite::security("bookworm-security"),
        ],
        headers: false,
    },
    GuestKernel {
        // trixie's kernel stays 6.12 for its whole life; bookworm-backports moves on.
        name: "debian-6.12",
        series: "6.12.",
        suites: [
            Suite::debian("trixie"),
            Suite::debian("trixie-updates"),
            Suite::security("trixie-security"),
        ],
        headers: false,
    },
];

/// A kernel unpacked and ready to boot.
pub struct Prepared {
    pub name: &'static str,
    /// The Debian package and its version, e.g. `linux-image-6.1.0-57-cloud-amd64 6.1.192-3`.
    pub package: String,
    pub vmlinuz: PathBuf,
    config: PathBuf,
    /// The unpacked linux-headers packages (usr/src, lib/modules), for kernels that need them.
    pub headers: Option<PathBuf>,
}

impl Prepared {
    /// Whether the kernel can mount the cgroup v1 memory controller. Kernels before 6.1 had no
    /// option for it; from 6.1 on it is CONFIG_MEMCG_V1 (off in Debian's 6.12).
    pub fn has_cgroup_v1_memory(&self) -> anyhow::Result<bool> {
        let config = fs::read_to_string(&self.config)
            .with_context(|| format!("cannot read {}", self.config.display()))?;
        Ok(!config.lines().any(|l| l == "# CONFIG_MEMCG_V1 is not set")
            && config.lines().any(|l| l == "CONFIG_MEMCG=y"))
    }
}

impl GuestKernel {
    /// The kernel from the cache under `cache`, downloading and unpacking it on first use.
    pub fn prepare(&'static self, cache: &Path) -> anyhow::Result<Prepared> {
        let dir = cache.join(self.name);
        let complete = dir.join(STAMP).is_file() && (!self.headers || dir.join("headers").is_dir());
        if !complete {
            eprintln!("xtask: fetching the {} kernel from Debian", self.name);
            self.fetch(&dir)?;
        }
        self.unpacked(&dir)
    }

    /// Downloads and unpacks the newest package (and its headers if wanted) into `dir`, then
    /// writes the stamp that marks the cache entry complete.
    fn fetch(&self, dir: &Path) -> anyhow::Result<()> {
        let apt = PrivateApt::create(&dir.join("apt"), &self.suites)?;
        apt.update()?;
        let package = newest_cloud_kernel(&apt)?;
        if !package.starts_with(&format!("linux-image-{}", self.series)) {
            bail!(
                "{}: {CLOUD_METAPACKAGE} now depends on {package}, not a {} kernel",
                self.name,
                self.series.trim_end_matches('.')
            );
        }
        let debs = apt.download(std::slice::from_ref(&package), &dir.join("deb"))?;
        unpack(&debs, &dir.join("unpacked"))?;
        if self.headers {
            let packages = headers_packages(&apt, &package)?;
            let debs = apt.download(&packages, &dir.join("headers-deb"))?;
            unpack(&debs, &dir.join("headers"))?;
        }
        let mut dpkg_deb = Command::new("dpkg-deb");
        dpkg_deb.arg("--field").args(&debs).arg("Version");
        let version = capture(&mut dpkg_deb)?;
        let stamp = dir.join(STAMP);
        fs::write(&stamp, format!("{package} {}\n", version.trim()))
            .with_context(|| format!("cannot write {}", stamp.display()))
    }

    fn unpacked(&'static self, dir: &Path) -> anyhow::Result<Prepared> {
        let stamp = dir.join(STAMP);
        let package = fs::read_to_string(&stamp)
            .with_context(|| format!("cannot read {}", stamp.display()))?;
        let boot = dir.join("unpacked/boot");
        Ok(Prepared {
            name: self.name,
            package: package.trim().to_owned(),
            vmlinuz: only_file_starting_with(&boot, "vmlinuz-")?,
            config: only_file_starting_with(&boot, "config-")?,
            headers: self.headers.then(|| dir.join("headers")),
        })
    }
}

/// The guest kernel called `name`.
pub fn by_name(name: &str) -> Option<&'static GuestKernel> {
    GUESTS.iter().find(|kernel| kernel.name == name)
}

/// The kernel package the cloud metapackage's candidate version depends on.
fn newest_cloud_kernel(apt: &PrivateApt) -> anyhow::Result<String> {
    apt.depends(CLOUD_METAPACKAGE)?
        .into_iter()
        .next()
        .with_context(|| format!("{CLOUD_METAPACKAGE} depends on no kernel package"))
}

/// The headers package of kernel package `image` and the one it depends on for the headers
/// common to all flavours (`linux-headers-5.10.0-46-cloud-amd64` and
/// `linux-headers-5.10.0-46-common`).
fn headers_packages(apt: &PrivateApt, image: &str) -> anyhow::Result<Vec<String>> {
    let headers = image.replacen("linux-image-", "linux-headers-", 1);
    let common = apt
        .depends(&headers)?
        .into_iter()
        .filter(|name| name.starts_with("linux-headers-"));
    Ok(std::iter::once(headers.clone()).chain(common).collect())
}

/// Unpacks .debs into `into` (replacing what is there) without installing them.
fn unpack(debs: &[PathBuf], into: &Path) -> anyhow::Result<()> {
    recreate_dir(into)?;
    for deb in debs {
        status(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))?;
    }
    Ok(())
}

/// The one file in `dir` whose name starts with `prefix`.
fn only_file_starting_with(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no {prefix}* in {}", dir.display()),
        _ => bail!("several {prefix}* in {}: {found:?}", dir.display()),
    }
}
