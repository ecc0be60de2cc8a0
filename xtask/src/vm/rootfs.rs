//! The guest's root filesystem: an ext4 image holding busybox, the guest's init, and every
//! host file the integration tests run — test binaries, memtrace, bpftrace, Go — at the same
//! absolute paths as on the host (the tests name their programs with env!("CARGO_BIN_EXE_…")),
//! with the shared libraries `ldd` lists for them.
//!
//! Why a disk image and not an initramfs: bpftrace's LLVM and clang libraries and the Go
//! toolchain weigh ~700 MiB. On a disk they are read on demand and stay reclaimable page
//! cache; in an initramfs they would be unpacked at every boot and pin guest memory that the
//! reclaim tests need. The image is made with `mkfs.ext4 -d` from a staging tree (hard links
//! to the host's files where possible), so nothing is mounted on the host and root is not
//! needed. The guest boots it with QEMU's `snapshot=on`: writable, its writes are discarded,
//! and every kernel of a run boots the same pristine image.
//!
//! The tree is planned first and fingerprinted (paths, sizes, modification times, generated
//! text): when nothing changed since the last image, that image is reused as it is.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    path::{Component, Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{
    RunFile,
    disk::{Layout, make_ext4},
    format::seconds,
    recreate_dir,
    suite::Build,
};
use crate::tasks::{capture, which};

/// PID 1 of the guest.
const INIT: &str = include_str!("guest/init.sh");
/// Where the guest's own tools live: busybox and its applets, and init. Last in the guest's
/// PATH, so the host's programs copied into the image win.
const VM_DIR: &str = "/vm";
/// Programs the integration tests start by name, copied from the host when it has them:
/// `sh -c` scripts, `setpriv` and `unshare` (util-linux, as on the host), bpftrace (the
/// independent oracle), go (the Go tests build a real Go program), binutils' objcopy, strip
/// and readelf (debug files split off a Go binary), prometheus-node-exporter (a real Go
/// daemon) and promtool (checks the metrics page).
const PROGRAMS: [&str; 11] = [
    "sh",
    "true",
    "setpriv",
    "unshare",
    "bpftrace",
    "go",
    "objcopy",
    "strip",
    "readelf",
    "prometheus-node-exporter",
    "promtool",
];
/// The shell system(3), popen(3) and `#!/bin/sh` scripts run, whatever PATH says (clang,
/// inside bpftrace, crashes without it).
const BIN_SH: &str = "/bin/sh";
/// Mount points and the few configuration files a root filesystem needs.
const DIRS: [(&str, u32); 8] = [
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/job", 0o755),
    ("/root", 0o700),
    ("/tmp", 0o1777),
    ("/etc", 0o755),
];
const FILES: [(&str, &str); 3] = [
    (
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    ("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
];
/// Free space on top of the content: test files, the Go build cache, page-cache workloads
/// (sparse files cost nothing). The image itself is sparse.
const HEADROOM: u64 = 8 << 30;

/// Builds `dir/root.img` for `build`, with the host paths `extra` too, and returns this run's
/// own link to it: another run may replace root.img meanwhile (atomically, under a lock), but
/// never what this run boots.
pub fn create(build: &Build, extra: &[PathBuf], dir: &Path) -> anyhow::Result<RunFile> {
    let started = Instant::now();
    let tree = plan(build, extra)?;
    let image = dir.join("root.img");
    let stamp = dir.join("root.fingerprint");
    let fingerprint = tree.fingerprint();
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock_path = dir.join("root.lock");
    let lock = fs::File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if image.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint) {
        eprintln!("xtask: root image {} is up to date", image.display());
    } else {
        let _ = fs::remove_file(&stamp);
        let stage = dir.join(format!("stage-{}", std::process::id()));
        tree.write(&stage)?;
        let size = tree.bytes + tree.bytes / 4 + HEADROOM;
        make_ext4(&stage, &image, size, "memtrace-root", Layout::Partitioned)?;
        let _ = fs::remove_dir_all(&stage);
        fs::write(&stamp, fingerprint)
            .with_context(|| format!("cannot write {}", stamp.display()))?;
        eprintln!(
            "xtask: root image {} ({} MiB of files) made in {}",
            image.display(),
            tree.bytes >> 20,
            seconds(started.elapsed())
        );
    }
    let own = RunFile::link(&image)?;
    drop(lock);
    Ok(own)
}

/// Everything the image holds.
fn plan(build: &Build, extra: &[PathBuf]) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    tree.add_guest_tools()?;
    for (dir, mode) in DIRS {
        tree.entries.insert(dir.into(), Entry::Dir { mode });
    }
    for (path, text) in FILES {
        tree.add_text(path, text, 0o644);
    }
    tree.add_program(Path::new(BIN_SH))?;
    for program in PROGRAMS {
        match which(program) {
            Some(path) => tree.add_program(&path)?,
            None => eprintln!("xtask: warning: `{program}` is not installed: the guests lack it"),
        }
    }
    if which("go").is_some() {
        let goroot = capture(Command::new("go").args(["env", "GOROOT"]))?;
        tree.add(Path::new(goroot.trim()))?;
    }
    for program in &build.programs {
        tree.add_program(program)?;
    }
    for binary in &build.binaries {
        tree.add_program(&binary.path)?;
        // Fixtures the tests read at run time (e.g. the Go programs' sources).
        let fixtures = binary.package_dir.join("tests");
        if fixtures.is_dir() {
            tree.add(&fixtures)?;
        }
    }
    if build.go_programs.is_dir() {
        tree.add(&build.go_programs)?;
    }
    for path in extra {
        // Absolute, but a symlink stays a symlink (with its target).
        let path =
            std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))?;
        tree.add_program(&path)?;
    }
    Ok(tree)
}

/// One path of the image.
#[derive(Hash)]
enum Entry {
    Dir {
        mode: u32,
    },
    /// A host file, with what tells whether it changed.
    File {
        source: PathBuf,
        len: u64,
        mtime: (i64, i64),
    },
    Symlink {
        target: PathBuf,
    },
    Text {
        text: String,
        mode: u32,
    },
}

/// The image's tree, keyed by path: a parent sorts before its children.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
    /// Host paths added whole already (also stops symlink cycles).
    added: HashSet<PathBuf>,
    /// Bytes of the host files, to size the image.
    bytes: u64,
}

impl Tree {
    /// busybox (its applets provide mount, ip, timeout, stty … in the guest) and init.
    fn add_guest_tools(&mut self) -> anyhow::Result<()> {
        let busybox = which("busybox").context("busybox is not installed")?;
        let bin = Path::new(VM_DIR).join("bin");
        self.entries
            .insert(VM_DIR.into(), Entry::Dir { mode: 0o755 });
        self.entries.insert(bin.clone(), Entry::Dir { mode: 0o755 });
        self.add_file(&busybox, &bin.join("busybox"))?;
        // A dynamically linked busybox works too, with its libraries.
        self.add_libraries(&busybox)?;
        let applets = capture(Command::new(&busybox).arg("--list"))?;
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let target = "busybox".into();
            self.entries
                .insert(bin.join(applet), Entry::Symlink { target });
        }
        self.add_text(&format!("{VM_DIR}/init"), INIT, 0o755);
        Ok(())
    }

    fn add_text(&mut self, path: &str, text: &str, mode: u32) {
        let text = text.to_owned();
        self.entries.insert(path.into(), Entry::Text { text, mode });
    }

    /// An executable with the shared libraries it loads.
    fn add_program(&mut self, path: &Path) -> anyhow::Result<()> {
        self.add(path)?;
        self.add_libraries(path)
    }

    fn add_libraries(&mut self, program: &Path) -> anyhow::Result<()> {
        for library in shared_libraries(program)? {
            self.add(&library)?;
        }
        Ok(())
    }

    /// Host path `path` (absolute), with everything below it if it is a directory. Symlinks
    /// on the way stay symlinks and what they point to is added too (so /lib → usr/lib stays
    /// a link, as the dynamic loader expects).
    fn add(&mut self, path: &Path) -> anyhow::Result<()> {
        self.mirror(path, true)
    }

    /// Adds `path`; with `whole` false only the directories leading to it and itself.
    fn mirror(&mut self, path: &Path, whole: bool) -> anyhow::Result<()> {
        let path = normalize(path);
        if whole && !self.added.insert(path.clone()) {
            return Ok(());
        }
        let mut prefix = PathBuf::from("/");
        let parts: Vec<Component> = path.components().skip(1).collect();
        for (i, part) in parts.iter().enumerate() {
            prefix.push(part);
            let last = i + 1 == parts.len();
            let meta = fs::symlink_metadata(&prefix)
                .with_context(|| format!("cannot stat {}", prefix.display()))?;
            if meta.file_type().is_symlink() {
                let target = self.add_symlink(&prefix, whole && last)?;
                if last {
                    return Ok(());
                }
                let rest: PathBuf = parts[i + 1..].iter().collect();
                return self.mirror(&target.join(rest), whole);
            }
            let mode = meta.permissions().mode() & 0o7777;
            if !(last && whole) {
                // A directory on the way.
                self.entries
                    .entry(prefix.clone())
                    .or_insert(Entry::Dir { mode });
            } else if meta.is_dir() {
                self.entries
                    .entry(prefix.clone())
                    .or_insert(Entry::Dir { mode });
                self.add_children(&prefix)?;
            } else if meta.is_file() {
                self.add_file(&prefix, &prefix)?;
            }
            // Anything else (sockets, devices) is left out.
        }
        Ok(())
    }

    /// Symlink `link` as it is, and what it points to (only the directories leading to it
    /// unless `whole`); returns the target.
    fn add_symlink(&mut self, link: &Path, whole: bool) -> anyhow::Result<PathBuf> {
        let text =
            fs::read_link(link).with_context(|| format!("cannot read {}", link.display()))?;
        let target = normalize(&link.parent().unwrap_or(Path::new("/")).join(&text));
        self.entries
            .insert(link.to_owned(), Entry::Symlink { target: text });
        // A dangling link stays dangling, as on the host.
        if fs::metadata(link).is_ok() {
            self.mirror(&target, whole)?;
        }
        Ok(target)
    }

    fn add_children(&mut self, dir: &Path) -> anyhow::Result<()> {
        let entries =
            fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            self.add(&entry.path())?;
        }
        Ok(())
    }

    /// Host file `source` at `path` in the image.
    fn add_file(&mut self, source: &Path, path: &Path) -> anyhow::Result<()> {
        let meta =
            fs::metadata(source).with_context(|| format!("cannot stat {}", source.display()))?;
        self.bytes += meta.len();
        let entry = Entry::File {
            source: source.to_owned(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        };
        self.entries.insert(path.to_owned(), entry);
        Ok(())
    }

    fn fingerprint(&self) -> String {
        let mut hasher = DefaultHasher::new();
        self.entries.hash(&mut hasher);
        format!("{:016x}\n", hasher.finish())
    }

    /// Writes the tree under `stage` (emptied first): host files hard-linked where possible.
    fn write(&self, stage: &Path) -> anyhow::Result<()> {
        recreate_dir(stage)?;
        for (path, entry) in &self.entries {
            let at = stage.join(path.strip_prefix("/").unwrap_or(path));
            write_entry(entry, &at).with_context(|| format!("cannot create {}", at.display()))?;
        }
        Ok(())
    }
}

fn write_entry(entry: &Entry, at: &Path) -> std::io::Result<()> {
    match entry {
        Entry::Dir { mode } => {
            fs::create_dir_all(at)?;
            fs::set_permissions(at, fs::Permissions::from_mode(*mode))
        }
        Entry::File { source, .. } => link_or_copy(source, at),
        Entry::Symlink { target } => symlink(target, at),
        Entry::Text { text, mode } => {
            fs::write(at, text)?;
            fs::set_permissions(at, fs::Permissions::from_mode(*mode))
        }
    }
}

/// The shared libraries `program` loads, per ldd; none for a static executable.
fn shared_libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("cannot run ldd {}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("statically linked") {
        // "not a dynamic executable": static, or a script.
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux… (0x…)`.
        let path = line.split_once("=>").map_or(line, |(_, path)| path).trim();
        if path.starts_with("not found") {
            bail!("{}: {}", program.display(), line.trim());
        }
        if let Some(path) = path
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Hard-links `from` to `to` (free and instant), or copies it where that is not possible
/// (another filesystem, someone else's file).
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map(drop)
}

/// `path` without `.` and `..` components (lexically: the caller resolves symlinks).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(
            normalize(Path::new("/usr/lib/go-1.19/../../share/go-1.19/src")),
            Path::new("/usr/share/go-1.19/src")
        );
        assert_eq!(normalize(Path::new("/a/./b/../../..")), Path::new("/"));
    }
}
