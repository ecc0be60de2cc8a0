//! Which container and Kubernetes pod a cgroup belongs to, read from the cgroup's path alone.
//!
//! Container runtimes name the cgroups they create after the container's id, and the kubelet
//! names a pod's cgroup after its UID and QoS class, so the path (`/proc/PID/cgroup`, cgroup v2
//! or the v1 memory hierarchy) says where a process runs without asking any runtime. The shapes,
//! by cgroup driver:
//!
//! | runtime | cgroupfs driver | systemd driver |
//! | --- | --- | --- |
//! | docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
//! | podman | `/libpod_parent/libpod-<id>` | `/machine.slice/libpod-<id>.scope[/container]` |
//! | containerd (CRI) | `/kubepods/<qos>/pod<uid>/<id>` | `…/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | CRI-O | `/kubepods/<qos>/pod<uid>/crio-<id>` | `…/kubepods-<qos>-pod<uid>.slice/crio-<id>.scope` |
//!
//! A bare 64-hex id names a container without saying whose (containerd and the old dockershim
//! look the same on cgroupfs): its runtime is unknown, never guessed. The runtimes' monitor
//! processes (`libpod-conmon-<id>`, `crio-conmon-<id>`) run beside the container, not in it,
//! and are not attributed to it. Nested containers (a kind node, docker in docker) name the
//! innermost. Paths outside memtrace's cgroup namespace start with `/..`; their components are
//! read the same way.

use std::fmt;

/// A container runtime, as its cgroup names show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    Crio,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
            Self::Crio => "crio",
        }
    }
}

/// A Kubernetes pod's quality-of-service class: the kubelet's cgroup level under `kubepods`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Qos {
    /// Requests equal limits for every container: directly under `kubepods`.
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn name(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// A container: its full id (64 hex digits) and, where the path shows it, its runtime.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// `null` when the path holds only the id (containerd and dockershim under cgroupfs).
    pub runtime: Option<Runtime>,
    pub id: String,
}

impl Container {
    /// The 12-digit prefix `docker ps` and `podman ps` show.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.runtime {
            Some(runtime) => write!(f, "{} container {}", runtime.name(), self.short_id()),
            None => write!(f, "container {}", self.short_id()),
        }
    }
}

/// A Kubernetes pod: its UID (as the API shows it, with dashes) and QoS class.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub uid: String,
    pub qos: Qos,
}

/// What a cgroup path says about where its processes run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub container: Option<Container>,
    pub pod: Option<Pod>,
}

impl Placement {
    /// Reads a cgroup path (as /proc/PID/cgroup shows it). A path that names neither a
    /// container nor a pod gives the empty placement.
    pub fn of_path(path: &str) -> Self {
        let components: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != "..")
            .collect();
        let mut placement = Self::default();
        for (i, component) in components.iter().enumerate() {
            let parents = &components[..i];
            if let Some(pod) = pod(component, parents) {
                placement.pod = Some(pod);
                // A container above the pod is the node it runs on (kind), not its own.
                placement.container = None;
            } else if let Some(container) = container(component, parents) {
                placement.container = Some(container);
            }
        }
        placement
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.container.is_none() && self.pod.is_none()
    }

    /// The cgroup of the container a path names: the path up to the container's own
    /// component (crun puts the processes of `libpod-<id>.scope` in its `container` child).
    pub fn container_cgroup(path: &str) -> Option<String> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut end = None;
        for (i, component) in components.iter().enumerate() {
            let parents: Vec<&str> = components[..i]
                .iter()
                .copied()
                .filter(|c| *c != "..")
                .collect();
            if pod(component, &parents).is_some() {
                end = None;
            } else if container(component, &parents).is_some() {
                end = Some(i);
            }
        }
        end.map(|end| format!("/{}", components[..=end].join("/")))
    }
}

/// A container's cgroup: `<prefix>-<id>[.scope]` for a runtime that prefixes, or a bare id
/// (docker's when its parent is `docker`).
fn container(component: &str, parents: &[&str]) -> Option<Container> {
    const PREFIXES: [(&str, Runtime); 6] = [
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
        ("cri-containerd-", Runtime::Containerd),
        // nerdctl and other containerd clients outside Kubernetes.
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("containerd-", Runtime::Containerd),
    ];
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if is_container_id(name) {
        return Some(Container {
            runtime: (parents.last() == Some(&"docker")).then_some(Runtime::Docker),
            id: name.to_owned(),
        });
    }
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        // `libpod-conmon-<id>`, `crio-conmon-<id>`: the monitor, beside the container.
        is_container_id(id).then(|| Container {
            runtime: Some(runtime),
            id: id.to_owned(),
        })
    })
}

/// Container ids are 64 lowercase hex digits (a sha256) for every runtime here.
fn is_container_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod's cgroup: `kubepods[/<qos>]/pod<uid>` under cgroupfs, `kubepods[-<qos>]-pod<uid>.slice`
/// under systemd (which writes the UID's dashes as underscores, a dash being its slice
/// separator), also below a kubelet cgroup root (`kubelet-kubepods-…`, `/kubelet/kubepods/…`).
fn pod(component: &str, parents: &[&str]) -> Option<Pod> {
    if let Some(slice) = component.strip_suffix(".slice") {
        let (levels, uid) = slice.rsplit_once("-pod")?;
        if !levels.split('-').any(|level| level == "kubepods") {
            return None;
        }
        let qos = match levels.rsplit('-').next() {
            Some("burstable") => Qos::Burstable,
            Some("besteffort") => Qos::BestEffort,
            Some("kubepods") => Qos::Guaranteed,
            _ => return None,
        };
        return pod_uid(&uid.replace('_', "-")).map(|uid| Pod { uid, qos });
    }
    let uid = pod_uid(component.strip_prefix("pod")?)?;
    let qos = match parents {
        [.., "kubepods"] => Qos::Guaranteed,
        [.., "kubepods", "burstable"] => Qos::Burstable,
        [.., "kubepods", "besteffort"] => Qos::BestEffort,
        _ => return None,
    };
    Some(Pod { uid, qos })
}

/// A pod UID as the API shows it: a UUID (8-4-4-4-12 hex digits), lowercase. Static pods'
/// UIDs are hashes of their manifest (32 hex digits, no dashes) and are kept as they are.
fn pod_uid(text: &str) -> Option<String> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = text.split('-').collect();
    let uuid = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hash = groups.len() == 1 && text.len() == 32;
    ((uuid || hash) && groups.iter().all(|g| hex(g))).then(|| text.to_ascii_lowercase())
}

/// Where a process runs: its cgroup, what the cgroup's path says, and its pid inside its own
/// pid namespace (the pid `ps` shows in its container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Whereabouts {
    /// In the hierarchy memtrace names cgroups in (v1 memory, else v2); None when unread.
    pub cgroup: Option<String>,
    pub placement: Placement,
    pub nspid: Option<u32>,
}

impl Whereabouts {
    pub fn new(cgroup: Option<String>, nspid: Option<u32>) -> Self {
        let placement = cgroup
            .as_deref()
            .map(Placement::of_path)
            .unwrap_or_default();
        Self {
            cgroup,
            placement,
            nspid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
    const UID: &str = "ac04f3f2-1f2c-11e9-9bf1-0800275b1b3a";

    fn container(runtime: Option<Runtime>) -> Option<Container> {
        Some(Container {
            runtime,
            id: ID.to_owned(),
        })
    }

    fn pod(qos: Qos) -> Option<Pod> {
        Some(Pod {
            uid: UID.to_owned(),
            qos,
        })
    }

    fn placement(path: &str) -> Placement {
        Placement::of_path(path)
    }

    #[test]
    fn plain_runtimes_under_both_drivers() {
        let cases = [
            // podman here: cgroup v1, cgroupfs.
            (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
            // podman, cgroup v2, systemd (rootful), with crun's `container` subgroup.
            (format!("/machine.slice/libpod-{ID}.scope"), Runtime::Podman),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Runtime::Podman,
            ),
            // rootless podman.
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                Runtime::Podman,
            ),
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (
                format!("/system.slice/nerdctl-{ID}.scope"),
                Runtime::Containerd,
            ),
        ];
        for (path, runtime) in cases {
            let found = placement(&path);
            assert_eq!(found.container, container(Some(runtime)), "{path}");
            assert_eq!(found.pod, None, "{path}");
        }
        // Docker under cgroupfs: the parent says whose it is.
        assert_eq!(
            placement(&format!("/docker/{ID}")).container,
            container(Some(Runtime::Docker))
        );
        // A bare id elsewhere (an ECS task) is a container of unknown runtime.
        assert_eq!(
            placement(&format!("/ecs/0a1b2c/{ID}")).container,
            container(None)
        );
    }

    #[test]
    fn kubernetes_pods_under_cgroupfs() {
        let cases = [
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                None,
                Qos::BestEffort,
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                None,
                Qos::Burstable,
            ),
            (format!("/kubepods/pod{UID}/{ID}"), None, Qos::Guaranteed),
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                Some(Runtime::Crio),
                Qos::Burstable,
            ),
        ];
        for (path, runtime, qos) in cases {
            let found = placement(&path);
            assert_eq!(found.container, container(runtime), "{path}");
            assert_eq!(found.pod, pod(qos), "{path}");
        }
    }

    #[test]
    fn kubernetes_pods_under_systemd() {
        let underscored = UID.replace('-', "_");
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"
                ),
                Runtime::Containerd,
                Qos::Burstable,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{ID}.scope"
                ),
                Runtime::Crio,
                Qos::BestEffort,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{underscored}.slice/docker-{ID}.scope"),
                Runtime::Docker,
                Qos::Guaranteed,
            ),
            // kind: a kubelet cgroup root inside the node's own docker container.
            (
                format!(
                    "/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{underscored}.slice/cri-containerd-{ID}.scope",
                    "0".repeat(64)
                ),
                Runtime::Containerd,
                Qos::BestEffort,
            ),
            // Outside memtrace's cgroup namespace.
            (
                format!(
                    "/../../kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"
                ),
                Runtime::Containerd,
                Qos::Burstable,
            ),
        ];
        for (path, runtime, qos) in cases {
            let found = placement(&path);
            assert_eq!(found.container, container(Some(runtime)), "{path}");
            assert_eq!(found.pod, pod(qos), "{path}");
        }
    }

    #[test]
    fn pod_without_container_and_neither() {
        // A pod's own cgroup (its limit, an OOM in it) names the pod alone.
        let found = placement(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        ));
        assert_eq!((found.container, found.pod), (None, pod(Qos::Burstable)));
        // CRI-O's monitor is in the pod (charged to it), beside the container.
        let found = placement(&format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"));
        assert_eq!((found.container, found.pod), (None, pod(Qos::Burstable)));
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/process_api/a4bf88e8f67b6bfec5cd75d6783b114c",
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods.slice/kubepods-burstable.slice",
            // The runtimes' monitors run beside the container, not in it.
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // Not an id: too short, uppercase.
            "/docker/4f797c539e6c",
            &format!("/docker/{}", ID.to_uppercase()),
            // Not a pod: no kubepods level.
            &format!("/system.slice/foo-pod{UID}.slice"),
            "/kubepods/podnot-a-uid",
            &format!("/elsewhere/pod{UID}"),
        ] {
            assert!(placement(path).is_empty(), "{path}: {:?}", placement(path));
        }
    }

    #[test]
    fn a_containers_own_cgroup() {
        let scope = format!("/machine.slice/libpod-{ID}.scope");
        assert_eq!(
            Placement::container_cgroup(&format!("{scope}/container")),
            Some(scope.clone())
        );
        assert_eq!(Placement::container_cgroup(&scope), Some(scope));
        assert_eq!(Placement::container_cgroup("/user.slice"), None);
        let pod_only = format!("/kubepods/burstable/pod{UID}");
        assert_eq!(Placement::container_cgroup(&pod_only), None);
    }

    #[test]
    fn whereabouts_say_where_a_process_runs() {
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let inside = Whereabouts::new(Some(path), Some(7));
        assert_eq!(
            inside.placement.container,
            container(Some(Runtime::Containerd))
        );
        assert_eq!(inside.placement.pod, pod(Qos::BestEffort));
        let host = Whereabouts::new(Some("/system.slice/cron.service".into()), Some(88));
        assert!(host.placement.is_empty());
        assert_eq!(Whereabouts::new(None, None), Whereabouts::default());
    }

    #[test]
    fn static_pod_uids_and_display() {
        let hash = "6a2a4a1b0d3e4f5a6b7c8d9e0f1a2b3c";
        let found = placement(&format!("/kubepods/burstable/pod{hash}/{ID}"));
        assert_eq!(found.pod.map(|p| p.uid), Some(hash.to_owned()));
        let podman = container(Some(Runtime::Podman)).unwrap();
        assert_eq!(podman.to_string(), "podman container 4f797c539e6c");
        assert_eq!(
            container(None).unwrap().to_string(),
            "container 4f797c539e6c"
        );
    }
}
