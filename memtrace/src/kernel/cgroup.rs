//! Which cgroup a process is in, and which cgroup an id from the kernel names.
//!
//! memtrace names a cgroup by its path in one hierarchy: the one that holds the memory
//! controller — cgroup v1's `memory` hierarchy on a v1 or hybrid host (this one: v1 memory and
//! an empty v2 hierarchy), else the v2 hierarchy (Debian 12/13 and most current distributions:
//! v2 only). Paths read as /proc/PID/cgroup writes them (`/system.slice/x.service`, `/` for the
//! root).
//!
//! A cgroup's id, as kernel programs read it (`kernfs_node->id`, which
//! `bpf_get_current_cgroup_id` returns on v2 and `task->cgroups->subsys[memory]->cgroup->kn->id`
//! gives on v1), is the inode number of its directory in cgroupfs on 64-bit kernels. So an id is
//! named by finding the directory with that inode: [`Cgroups`] keeps an id → path map, filled
//! from the directories of processes it looked up and, when an id is missing, from a bounded
//! walk of the hierarchy (at most one per [`MIN_WALK_INTERVAL`]). An id it cannot name is
//! [`UnknownCgroup`], which says why — never a guess.
//!
//! Everything here reads /proc and cgroupfs: call it from a blocking worker, not from the event
//! loop.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::procfs;

/// Walks of the hierarchy are at most this frequent: an id the kernel reports for a cgroup
/// created since the last walk is named after the next one; a storm of unknown ids (a removed
/// cgroup's) costs one walk per interval, not one per id.
pub const MIN_WALK_INTERVAL: Duration = Duration::from_secs(2);
/// A walk gives up past this many directories (a node has hundreds to a few thousand).
const MAX_WALK_DIRS: usize = 100_000;
/// … or this deep.
const MAX_WALK_DEPTH: usize = 64;
/// Ids named between walks are kept up to this many; each walk replaces the map, so removed
/// cgroups do not pile up.
const MAX_NAMES: usize = 65_536;

/// Which cgroup version a hierarchy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1's hierarchy with the `memory` controller.
    V1Memory,
    /// The unified (v2) hierarchy.
    V2,
}

/// The hierarchy memtrace names cgroups in, and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    pub root: PathBuf,
}

impl Hierarchy {
    /// The hierarchy of this machine (as this process's mount namespace shows it): a v1 mount
    /// with the `memory` option, else a v2 mount whose root offers `memory`, else any v2 mount.
    /// `None` when no cgroupfs is mounted.
    pub fn find() -> Option<Self> {
        let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&mounts, |root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        })
    }

    /// The choice [`Hierarchy::find`] makes, from /proc/self/mountinfo's text;
    /// `offers_memory` says whether a v2 root offers the memory controller.
    fn from_mountinfo(text: &str, offers_memory: impl Fn(&Path) -> bool) -> Option<Self> {
        let mounts: Vec<(String, &str, &str)> = text.lines().filter_map(parse_mountinfo).collect();
        let v1 = mounts.iter().find(|(_, fs_type, options)| {
            *fs_type == "cgroup" && options.split(',').any(|o| o == "memory")
        });
        if let Some((point, _, _)) = v1 {
            return Some(Self {
                version: Version::V1Memory,
                root: PathBuf::from(point),
            });
        }
        let v2: Vec<PathBuf> = mounts
            .iter()
            .filter(|(_, fs_type, _)| *fs_type == "cgroup2")
            .map(|(point, _, _)| PathBuf::from(point))
            .collect();
        let root = v2
            .iter()
            .find(|root| offers_memory(root))
            .or_else(|| v2.first())?;
        Some(Self {
            version: Version::V2,
            root: root.clone(),
        })
    }

    /// The cgroup of a process (or task) in this hierarchy, from /proc/PID/cgroup. `None` once
    /// it is reaped, or once it has begun to exit if /proc says `/`: an exiting task shows the
    /// root on cgroup v1, whatever its cgroup was (read first, checked after: a path read
    /// before the task began to exit is right).
    pub fn of_process(&self, pid: u32) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        self.path_in(&text)
            .filter(|path| path != "/" || !procfs::exiting(pid))
    }

    /// This hierarchy's path in a /proc/PID/cgroup text.
    fn path_in(&self, text: &str) -> Option<String> {
        let line = match self.version {
            Version::V1Memory => text.lines().find(|line| {
                line.split(':')
                    .nth(1)
                    .is_some_and(|controllers| controllers.split(',').any(|c| c == "memory"))
            }),
            Version::V2 => text.lines().find(|line| line.starts_with("0::")),
        };
        line?.splitn(3, ':').nth(2).map(str::to_owned)
    }

    /// The id of a cgroup (the inode number of its directory), while the cgroup exists.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        fs::metadata(self.dir(path)).ok().map(|m| m.ino())
    }

    /// The directory of a cgroup path.
    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Every cgroup's id and path, bounded by [`MAX_WALK_DIRS`] and [`MAX_WALK_DEPTH`];
    /// whether the walk saw the whole hierarchy.
    fn walk(&self) -> (HashMap<u64, String>, bool) {
        let mut found = HashMap::new();
        let mut stack = vec![(self.root.clone(), 0usize)];
        let mut complete = true;
        while let Some((dir, depth)) = stack.pop() {
            if found.len() >= MAX_WALK_DIRS {
                complete = false;
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue; // removed meanwhile
            };
            let Ok(relative) = dir.strip_prefix(&self.root) else {
                continue;
            };
            found.insert(meta.ino(), format!("/{}", relative.display()));
            if depth >= MAX_WALK_DEPTH {
                complete = false;
                continue;
            }
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        (found, complete)
    }
}

/// `(mount point, filesystem type, super options)` of a /proc/PID/mountinfo line, the mount
/// point unescaped.
fn parse_mountinfo(line: &str) -> Option<(String, &str, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let fs_type = after.next()?;
    let _source = after.next()?;
    Some((unescape(point), fs_type, after.next().unwrap_or_default()))
}

/// The kernel writes a space, tab, newline and backslash in a mountinfo path as `\040`,
/// `\011`, `\012` and `\134` (`seq_path`'s escapes): three octal digits after a backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a cgroup id has no name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownCgroup {
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    /// Not found in the hierarchy: removed before memtrace looked, or created after its last
    /// walk (named after the next one, at most [`MIN_WALK_INTERVAL`] later).
    #[error("cgroup id {id} is not in the cgroup hierarchy (removed before memtrace looked?)")]
    NotFound { id: u64 },
    /// The last walk stopped at its bound before it could reach every cgroup.
    #[error("cgroup id {id} was not found in the part of the hierarchy memtrace walks")]
    BeyondWalk { id: u64 },
}

/// Names cgroups: the hierarchy, and the id → path map with what it learnt so far.
#[derive(Debug)]
pub struct Cgroups {
    hierarchy: Option<Hierarchy>,
    /// Cgroup id → path.
    by_id: HashMap<u64, String>,
    /// Paths whose id is in `by_id` (so a process's cgroup is stat'ed once, not per process).
    named: std::collections::HashSet<String>,
    last_walk: Option<(Instant, bool)>,
}

impl Cgroups {
    /// For this machine's hierarchy.
    pub fn new() -> Self {
        Self::with(Hierarchy::find())
    }

    pub fn with(hierarchy: Option<Hierarchy>) -> Self {
        Self {
            hierarchy,
            by_id: HashMap::new(),
            named: std::collections::HashSet::new(),
            last_walk: None,
        }
    }

    /// The hierarchy cgroups are named in, if one is mounted.
    pub fn hierarchy(&self) -> Option<&Hierarchy> {
        self.hierarchy.as_ref()
    }

    /// The cgroup of a process, from /proc/PID/cgroup; `None` once it is reaped. Learns the
    /// cgroup's id too, so the kernel's id for it is named without a walk.
    pub fn of_process(&mut self, pid: u32) -> Option<String> {
        let hierarchy = self.hierarchy.as_ref()?;
        let path = hierarchy.of_process(pid)?;
        if !self.named.contains(&path)
            && self.by_id.len() < MAX_NAMES
            && let Some(id) = hierarchy.id_of(&path)
        {
            self.learn(id, path.clone());
        }
        Some(path)
    }

    /// The path of the cgroup with id `id`: from what was learnt, else from a walk of the
    /// hierarchy when none was made in the last [`MIN_WALK_INTERVAL`].
    pub fn path_of(&mut self, id: u64) -> Result<String, UnknownCgroup> {
        self.path_at(id, Instant::now())
    }

    fn path_at(&mut self, id: u64, now: Instant) -> Result<String, UnknownCgroup> {
        if let Some(path) = self.by_id.get(&id) {
            return Ok(path.clone());
        }
        let Some(hierarchy) = &self.hierarchy else {
            return Err(UnknownCgroup::NoHierarchy);
        };
        let due = self
            .last_walk
            .is_none_or(|(at, _)| now.saturating_duration_since(at) >= MIN_WALK_INTERVAL);
        if due {
            let (found, complete) = hierarchy.walk();
            self.replace(found);
            self.last_walk = Some((now, complete));
        }
        match (self.by_id.get(&id), self.last_walk) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some((_, false))) => Err(UnknownCgroup::BeyondWalk { id }),
            (None, _) => Err(UnknownCgroup::NotFound { id }),
        }
    }

    fn learn(&mut self, id: u64, path: String) {
        self.named.insert(path.clone());
        self.by_id.insert(id, path);
    }

    /// The map a walk found replaces the old one: removed cgroups go.
    fn replace(&mut self, found: HashMap<u64, String>) {
        self.named = found.values().cloned().collect();
        self.by_id = found;
    }

    /// How many ids are named now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Self::with(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    const PROC_CGROUP_V1: &str = "9:name=systemd:/\n4:memory:/jobs/a\n1:cpu:/\n0::/\n";
    const PROC_CGROUP_V2: &str = "0::/system.slice/x.service\n";

    #[test]
    fn the_memory_hierarchy_is_chosen() {
        let hybrid = Hierarchy::from_mountinfo(HYBRID, |_| false).unwrap();
        assert_eq!(
            hybrid,
            Hierarchy {
                version: Version::V1Memory,
                root: "/sys/fs/cgroup/memory".into()
            }
        );
        assert_eq!(hybrid.path_in(PROC_CGROUP_V1).as_deref(), Some("/jobs/a"));
        let v2 = Hierarchy::from_mountinfo(V2, |_| true).unwrap();
        assert_eq!(
            (v2.version, v2.root.as_path()),
            (Version::V2, Path::new("/sys/fs/cgroup"))
        );
        assert_eq!(
            v2.path_in(PROC_CGROUP_V2).as_deref(),
            Some("/system.slice/x.service")
        );
        // A v1 text has a v2 line too: the v2 hierarchy reads that one.
        assert_eq!(v2.path_in(PROC_CGROUP_V1).as_deref(), Some("/"));
        assert_eq!(hybrid.path_in(PROC_CGROUP_V2), None);
        assert_eq!(Hierarchy::from_mountinfo("garbage\n", |_| true), None);
    }

    #[test]
    fn parses_mountinfo() {
        let v1 = "35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory";
        assert_eq!(
            parse_mountinfo(v1),
            Some(("/sys/fs/cgroup/memory".to_owned(), "cgroup", "rw,memory"))
        );
        assert_eq!(parse_mountinfo("garbage"), None);
        let spaced = r"36 25 0:31 / /mnt/my\040cgroups\134v2 rw - cgroup2 cgroup2 rw";
        assert_eq!(
            parse_mountinfo(spaced),
            Some(("/mnt/my cgroups\\v2".to_owned(), "cgroup2", "rw"))
        );
        assert_eq!(unescape(r"a\04"), r"a\04");
    }

    /// A fake hierarchy in a temporary directory: ids are the directories' inode numbers, as in
    /// cgroupfs.
    fn fake_hierarchy(tag: &str) -> Hierarchy {
        let root =
            std::env::temp_dir().join(format!("memtrace-cgroup-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("system.slice/a.service")).unwrap();
        fs::create_dir_all(root.join("kubepods/pod1")).unwrap();
        Hierarchy {
            version: Version::V2,
            root,
        }
    }

    #[test]
    fn ids_are_named_by_a_walk_and_unknown_ids_say_so() {
        let hierarchy = fake_hierarchy("walk");
        let id = |path: &str| hierarchy.id_of(path).unwrap();
        let (service, pod) = (id("/system.slice/a.service"), id("/kubepods/pod1"));
        let mut cgroups = Cgroups::with(Some(hierarchy.clone()));
        let t0 = Instant::now();
        assert_eq!(
            cgroups.path_at(service, t0).as_deref(),
            Ok("/system.slice/a.service")
        );
        assert_eq!(cgroups.path_at(pod, t0).as_deref(), Ok("/kubepods/pod1"));
        assert_eq!(cgroups.path_at(id("/"), t0).as_deref(), Ok("/"));
        // A cgroup created after the walk: unknown until the next walk is due.
        fs::create_dir_all(hierarchy.root.join("kubepods/pod2")).unwrap();
        let new = id("/kubepods/pod2");
        assert_eq!(
            cgroups.path_at(new, t0 + Duration::from_millis(10)),
            Err(UnknownCgroup::NotFound { id: new })
        );
        assert_eq!(
            cgroups.path_at(new, t0 + MIN_WALK_INTERVAL).as_deref(),
            Ok("/kubepods/pod2")
        );
        // A removed cgroup leaves the map at the next walk.
        fs::remove_dir(hierarchy.root.join("kubepods/pod2")).unwrap();
        let _ = cgroups.path_at(u64::MAX, t0 + 2 * MIN_WALK_INTERVAL);
        assert_eq!(cgroups.len(), 5, "root, 2 slices, a.service, pod1");
        let err = cgroups
            .path_at(u64::MAX, t0 + 2 * MIN_WALK_INTERVAL)
            .unwrap_err();
        assert!(
            err.to_string().contains("not in the cgroup hierarchy"),
            "{err}"
        );
        assert_eq!(
            Cgroups::default().path_of(1),
            Err(UnknownCgroup::NoHierarchy)
        );
        let _ = fs::remove_dir_all(&hierarchy.root);
    }

    /// This process's own cgroup, as /proc says, and its id named without a walk.
    #[test]
    fn a_process_cgroup_and_its_id() {
        let Some(hierarchy) = Hierarchy::find() else {
            return; // no cgroupfs here (a bare build container)
        };
        let mut cgroups = Cgroups::with(Some(hierarchy.clone()));
        let me = std::process::id();
        let path = cgroups.of_process(me).expect("own cgroup");
        assert!(path.starts_with('/'), "{path}");
        let id = hierarchy.id_of(&path).expect("own cgroup's directory");
        assert_eq!(cgroups.len(), 1, "learnt from the process, no walk");
        assert_eq!(cgroups.path_of(id), Ok(path));
        assert_eq!(cgroups.of_process(0), None);
    }
}
