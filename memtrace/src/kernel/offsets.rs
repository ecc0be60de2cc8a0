//! Where the fields and members the kernel programs read sit on the running kernel: tracepoint
//! fields from tracefs, struct members from BTF. What cannot be found turns off only what
//! needs it, with a warning that says what the user loses.

use std::path::Path;

use memtrace_common::{
    cgroup::CgroupIds,
    config::{FieldOffsets, MemberOffsets},
    fields::{Field, Layout},
    hooks::{Need, Tracepoint},
    members::Member,
    regs::{ArgsAt, PT_REGS_SIZE, STACK_PADDING, STACK_PADDING_FRED, THREAD_SIZE},
};

use super::{
    btf::{self, Btf},
    cgroup::{Hierarchy, Version},
    system, tracefs,
};

/// Why a struct member the programs read cannot be used on this kernel.
#[derive(Debug, thiserror::Error)]
enum MemberError {
    /// The kernel's BTF could not be read.
    #[error("{0}")]
    NoBtf(btf::Error),
    #[error("kernel BTF: {ty}.{name}: {source}")]
    Lookup {
        ty: &'static str,
        name: &'static str,
        source: btf::Error,
    },
    #[error("kernel BTF: {ty}.{name} is {size} bytes where memtrace reads {read}")]
    Width {
        ty: &'static str,
        name: &'static str,
        size: u32,
        read: u32,
    },
    #[error("the memory controller's index {index} is past {ty}.{name}'s {entries} entries")]
    PastSubsys {
        ty: &'static str,
        name: &'static str,
        index: u32,
        entries: u32,
    },
    #[error("no memory controller in the kernel's BTF or /proc/cgroups")]
    NoMemoryController,
}

impl MemberError {
    fn lookup(member: Member) -> impl FnOnce(btf::Error) -> Self {
        let (ty, name) = member.path();
        move |source| Self::Lookup { ty, name, source }
    }
}

/// The offsets to pass to the programs, and what is missing.
pub struct Offsets {
    pub fields: FieldOffsets,
    pub members: MemberOffsets,
    /// The memory controller's index in `css_set.subsys`; `u32::MAX` when the path to a
    /// task's memory cgroup is not known here.
    pub memcg_subsys_index: u32,
    /// Which memory-cgroup id the programs can read here.
    pub cgroup_ids: CgroupIds,
    /// Where a syscall exit program can find the call's arguments here ([`ArgsAt::Parked`]:
    /// only from an entry program).
    pub args_at: ArgsAt,
    /// Where `pt_regs` sits from `task_struct.stack` ([`ArgsAt::KernelStack`]).
    pub pt_regs_offset: u32,
    /// Tracepoints whose programs cannot work here, and why.
    unusable: Vec<(Tracepoint, String)>,
    /// What the user loses because something optional is missing.
    pub warnings: Vec<String>,
}

impl Offsets {
    /// Resolves every [`Field`] from the tracefs `events` directory and every [`Member`] from
    /// the kernel's BTF (or the error reading it). `task_pt_regs`: whether this kernel has the
    /// `bpf_task_pt_regs` helper (5.15+).
    pub fn resolve(events: &Path, btf: Result<&Btf, &btf::Error>, task_pt_regs: bool) -> Self {
        let mut offsets = Self {
            fields: [0; Field::COUNT],
            members: [0; Member::COUNT],
            memcg_subsys_index: u32::MAX,
            cgroup_ids: CgroupIds::Unknown,
            args_at: ArgsAt::Parked,
            pt_regs_offset: 0,
            unusable: Vec::new(),
            warnings: Vec::new(),
        };
        for &field in Field::ALL {
            offsets.resolve_field(events, field);
        }
        offsets.resolve_members(btf);
        offsets.resolve_registers(btf, task_pt_regs);
        offsets
    }

    /// Why the program on this tracepoint cannot work here, if a field it needs is missing.
    pub fn unusable(&self, tracepoint: Tracepoint) -> Option<&str> {
        self.unusable
            .iter()
            .find(|(tp, _)| *tp == tracepoint)
            .map(|(_, why)| why.as_str())
    }

    fn resolve_field(&mut self, events: &Path, field: Field) {
        let spec = field.spec();
        let Tracepoint { group, name } = spec.tracepoint;
        let found = tracefs::field_offset(events, spec.tracepoint, spec.name);
        let why = match (spec.layout, found) {
            (Layout::Fixed(fixed), Some(at)) if at == u32::from(fixed) => return,
            (Layout::Fixed(fixed), Some(at)) => format!(
                "tracepoint {group}/{name} has field {} at offset {at}, not {fixed}",
                spec.name
            ),
            (Layout::Resolved { .. }, Some(at)) => {
                self.fields[field as usize] = at;
                return;
            }
            // A missing tracepoint is reported when its hook is attached.
            (_, None) if !tracefs::exists(events, spec.tracepoint) => return,
            (_, None) if spec.need == Need::Optional => return,
            (_, None) => format!("tracepoint {group}/{name} has no field {}", spec.name),
        };
        self.unusable.push((spec.tracepoint, why));
    }

    fn resolve_members(&mut self, btf: Result<&Btf, &btf::Error>) {
        let mut found = |member: Member| -> Result<(), MemberError> {
            let (ty, name) = member.path();
            let btf = btf.map_err(|e| MemberError::NoBtf(e.clone()))?;
            let at = btf
                .member_offset(ty, name)
                .map_err(MemberError::lookup(member))?;
            check_width(btf, member)?;
            self.members[member as usize] = at;
            Ok(())
        };
        let faults = [Member::TaskMinFlt, Member::TaskMajFlt];
        if let Err(e) = faults.into_iter().try_for_each(&mut found) {
            self.warnings.push(format!(
                "{e}; faults of threads that exit while traced are not counted"
            ));
        }
        let start = [Member::TaskGroupLeader, Member::TaskStartBoottime];
        if let Err(e) = start.into_iter().try_for_each(&mut found) {
            self.warnings.push(format!(
                "{e}; the start time of a process that exits before memtrace reads /proc is unknown"
            ));
        }
        if let Err(e) = found(Member::TaskStack) {
            self.warnings.push(format!(
                "{e}; with --stacks, the caller of a function that makes its system call without a frame (libc's and Go's wrappers) is left out"
            ));
        }
        if let Err(e) = found(Member::TaskFlags) {
            self.warnings.push(format!(
                "{e}; memory that reclaim takes from a process is not counted"
            ));
        }
        let memcg = [
            Member::TaskCgroups,
            Member::CssSetSubsys,
            Member::CssCgroup,
            Member::CgroupKn,
            Member::KernfsNodeId,
        ];
        let index = memcg
            .into_iter()
            .try_for_each(&mut found)
            .and_then(|()| memory_controller_id(btf))
            .and_then(|index| subsys_has(btf, index));
        match index {
            Ok(index) => self.memcg_subsys_index = index,
            Err(e) => self.warnings.push(format!(
                "{e}; an OOM victim's memory cgroup is known only while /proc shows it"
            )),
        }
        let group_dead = self.fields[Field::ExitGroupDead as usize] != 0;
        let exiting = [Member::TaskSignal, Member::SignalLive];
        if let Err(e) = exiting.into_iter().try_for_each(&mut found)
            && !group_dead
        {
            self.warnings.push(format!(
                "{e}; a process that exits is known to be gone, and its syscall totals reach memtrace, only at its next /proc sample or when its pid is reused"
            ));
        }
        // The hierarchy memtrace names cgroups in (`cgroup.rs`): its ids are what the programs
        // must read.
        self.cgroup_ids = match Hierarchy::find().map(|h| h.version) {
            Some(Version::V1Memory) if self.memcg_subsys_index != u32::MAX => CgroupIds::MemoryV1,
            Some(Version::V2) => CgroupIds::Unified,
            _ => CgroupIds::Unknown,
        };
    }

    /// Where a syscall's exit program finds the call's arguments: the caller's saved registers
    /// (`pt_regs`, whose layout BTF must confirm), through `bpf_task_pt_regs` where the kernel
    /// has it, else at the top of the task's kernel stack. Without either, an entry program
    /// parks them.
    fn resolve_registers(&mut self, btf: Result<&Btf, &btf::Error>, task_pt_regs: bool) {
        let Ok(btf) = btf else {
            return;
        };
        if btf.struct_size("pt_regs") != Ok(PT_REGS_SIZE) {
            return;
        }
        // Found on every kernel (`task_struct.stack` was resolved with the other members):
        // `--stacks` reads the user stack pointer there too.
        if self.members[Member::TaskStack as usize] != 0 {
            // The entry code built with FRED (6.9+) leaves 16 bytes above pt_regs.
            let padding = if btf.has_function("fred_entry_from_user") {
                STACK_PADDING_FRED
            } else {
                STACK_PADDING
            };
            self.pt_regs_offset = THREAD_SIZE - padding - PT_REGS_SIZE;
        }
        if task_pt_regs {
            self.args_at = ArgsAt::TaskPtRegs;
        } else if self.pt_regs_offset != 0 {
            self.args_at = ArgsAt::KernelStack;
        }
    }
}

/// Whether the member is as wide as the programs read it (see `Member::read_bytes`).
fn check_width(btf: &Btf, member: Member) -> Result<(), MemberError> {
    let (ty, name) = member.path();
    let size = btf
        .member_size(ty, name)
        .map_err(MemberError::lookup(member))?;
    let read = member.read_bytes();
    let fits = match member {
        Member::CssSetSubsys => size % read == 0,
        _ => size == read,
    };
    match fits {
        true => Ok(()),
        false => Err(MemberError::Width {
            ty,
            name,
            size,
            read,
        }),
    }
}

/// `index`, if `css_set.subsys` has that many entries and more: the programs read the entry
/// at the memory controller's index.
fn subsys_has(btf: Result<&Btf, &btf::Error>, index: u32) -> Result<u32, MemberError> {
    let member = Member::CssSetSubsys;
    let (ty, name) = member.path();
    let entries = btf
        .map_err(|e| MemberError::NoBtf(e.clone()))?
        .member_size(ty, name)
        .map_err(MemberError::lookup(member))?
        / member.read_bytes();
    match index < entries {
        true => Ok(index),
        false => Err(MemberError::PastSubsys {
            ty,
            name,
            index,
            entries,
        }),
    }
}

/// The memory controller's index among the kernel's cgroup subsystems: `memory_cgrp_id` from
/// BTF, else its row in /proc/cgroups (which lists them in id order).
fn memory_controller_id(btf: Result<&Btf, &btf::Error>) -> Result<u32, MemberError> {
    let from_btf = btf
        .ok()
        .and_then(|btf| btf.enum_value("cgroup_subsys_id", "memory_cgrp_id").ok())
        .and_then(|id| u32::try_from(id).ok());
    from_btf
        .or_else(system::memory_controller_index)
        .ok_or(MemberError::NoMemoryController)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake tracefs `events` directory: `mark_victim` as on old kernels (pid only), a
    /// `page_fault_user` whose layout moved, no `mm_vmscan_lru_shrink_inactive` fields.
    fn old_kernel_events() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memtrace-offsets-{}", std::process::id()));
        let write = |path: &str, fields: &str| {
            let tp = dir.join(path);
            std::fs::create_dir_all(&tp).unwrap();
            std::fs::write(
                tp.join("format"),
                format!(
                    "name: x\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n{fields}"
                ),
            )
            .unwrap();
        };
        write(
            "oom/mark_victim",
            "\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n",
        );
        write(
            "exceptions/page_fault_user",
            "\tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;\n\
             \tfield:unsigned long error_code;\toffset:32;\tsize:8;\tsigned:0;\n",
        );
        write("vmscan/mm_vmscan_lru_shrink_inactive", "");
        dir
    }

    #[test]
    fn optional_fields_read_as_absent_and_required_ones_disable_their_hook() {
        let dir = old_kernel_events();
        let offsets = Offsets::resolve(&dir, Err(&btf::Error::Io("no BTF here".into())), true);
        let at = |field: Field| offsets.fields[field as usize];
        assert_eq!(at(Field::OomPid), 8);
        // Absent optional fields are passed as 0: the program reports them unknown.
        assert_eq!(at(Field::OomComm), 0);
        assert_eq!(at(Field::OomAnonRss), 0);
        let tp = |field: Field| field.spec().tracepoint;
        assert!(offsets.unusable(tp(Field::OomPid)).is_none());
        let shrink = offsets.unusable(tp(Field::ShrinkScanned)).unwrap();
        assert!(shrink.contains("has no field nr_scanned"), "{shrink}");
        let fault = offsets.unusable(tp(Field::FaultErrorCode)).unwrap();
        assert!(fault.contains("error_code at offset 32, not 24"), "{fault}");
        // A tracepoint that does not exist is not "unusable" here: attaching reports it.
        assert!(offsets.unusable(tp(Field::MemcgEndReclaimed)).is_none());
        // Without BTF, the member offsets stay unknown, with what that costs.
        assert_eq!(offsets.members, [0; Member::COUNT]);
        assert_eq!(offsets.memcg_subsys_index, u32::MAX);
        assert_eq!(offsets.args_at, ArgsAt::Parked, "no BTF to confirm pt_regs");
        assert_eq!(offsets.warnings.len(), 6, "{:?}", offsets.warnings);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The field table checked against the tracepoint formats of every tested kernel, captured
/// from each (`cargo xtask vm --kernel debian-X -- cat …/format`; the host's for 6.18) into
/// `formats/<major.minor>.txt`: a `=== group/name` line, then that tracepoint's `format` file.
#[cfg(test)]
pub(crate) mod captured {
    use memtrace_common::{Kernel, fields::Field};

    use crate::kernel::tracefs::parse_field_offset;

    pub(crate) fn formats(kernel: Kernel) -> &'static str {
        match (kernel.0, kernel.1) {
            (5, 10) => include_str!("formats/5.10.txt"),
            (6, 1) => include_str!("formats/6.1.txt"),
            (6, 12) => include_str!("formats/6.12.txt"),
            (6, 18) => include_str!("formats/6.18.txt"),
            _ => panic!("no captured formats for tested kernel {kernel:?}: capture them"),
        }
    }

    /// The `format` file of `group/name` in a capture.
    pub(crate) fn format_of<'a>(capture: &'a str, tracepoint: &str) -> &'a str {
        let start = capture
            .find(&format!("=== {tracepoint}\n"))
            .unwrap_or_else(|| panic!("{tracepoint} not captured"));
        let body = &capture[start..];
        let body = &body[body.find('\n').map_or(0, |n| n + 1)..];
        body.find("=== ").map_or(body, |end| &body[..end])
    }

    #[test]
    fn every_field_sits_where_the_table_says_on_every_tested_kernel() {
        let mut wrong = Vec::new();
        for &kernel in &Kernel::TESTED {
            let capture = formats(kernel);
            for &field in Field::ALL {
                let spec = field.spec();
                let tracepoint = format!("{}/{}", spec.tracepoint.group, spec.tracepoint.name);
                let actual = parse_field_offset(format_of(capture, &tracepoint), spec.name);
                let table = spec.layout.on(kernel).map(u32::from);
                if table != actual {
                    wrong.push(format!(
                        "{tracepoint}.{} on {kernel:?}: table {table:?}, kernel {actual:?}",
                        spec.name
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
