//! Attaching the syscall programs on BPF trampolines (`memtrace_common::hooks::Trampoline`)
//! where the kernel allows it, one syscall at a time, entry and exit together (or the exit
//! alone where only totals are printed: it reads the arguments itself); whatever does not
//! attach stays on its tracepoints.

use anyhow::anyhow;
use aya::{
    Btf, Ebpf,
    programs::{
        FEntry, FExit, ProgramError, fentry::FEntryLink, fexit::FExitLink,
        trace_point::TracePointLink,
    },
};
use memtrace_common::hooks::{End, Program, Run, Trampoline};

/// An attached program, owned so that detaching can be done in parallel (see `detach_all`).
/// Never read: holding it keeps the program attached, dropping it detaches.
#[allow(dead_code)]
pub enum Link {
    Tracepoint(TracePointLink),
    Entry(FEntryLink),
    Exit(FExitLink),
}

/// The syscall programs attached on trampolines.
#[derive(Default)]
pub struct OnTrampolines {
    pub links: Vec<Link>,
    /// The tracepoint programs they stand in for, not to be attached.
    pub replaced: Vec<Program>,
    /// Why none could attach, when none did.
    pub refused: Option<Refusal>,
}

/// Why the syscall programs are on their tracepoints rather than on trampolines.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no kernel BTF: {0}")]
    NoBtf(String),
    /// `--bench-tracepoints-only`.
    #[error("not tried (--bench-tracepoints-only)")]
    NotTried,
    /// The kernel refused the first syscall asked for (no trampolines, a policy, the
    /// verifier): the others are not asked.
    #[error("{function}: {why}")]
    Refused { function: &'static str, why: String },
}

/// Attaches every syscall pair this run needs on trampolines, as far as the kernel allows. A
/// kernel that refuses the first pair (no BTF, no trampolines, or refused by policy: EPERM on
/// some hosted VMs) is not asked again for the others.
///
/// aya's reading of the kernel's BTF (each trampoline program is loaded against its function's
/// type) is made here, only when a pair applies (`memtrace reclaim` has none), and freed on
/// return, before the ring buffer is mapped.
pub fn attach(ebpf: &mut Ebpf, run: Run) -> OnTrampolines {
    let mut attached = OnTrampolines::default();
    let mut btf: Option<Btf> = None;
    for pair in Trampoline::ALL.chunks_exact(2) {
        let (entry, exit) = (pair[0], pair[1]);
        debug_assert!(entry.end() == End::Entry && exit.end() == End::Exit);
        if !exit.replaces().hook().when.applies(run) {
            continue;
        }
        let btf = match btf {
            Some(ref btf) => btf,
            None => match Btf::from_sys_fs() {
                Ok(parsed) => btf.insert(parsed),
                Err(e) => {
                    attached.refused = Some(Refusal::NoBtf(e.to_string()));
                    return attached;
                }
            },
        };
        // The exit reads the arguments from the registers the entry point is given: the entry
        // is needed only where the tracepoint entry would be (to time each call for its
        // record).
        let entry = entry.replaces().hook().when.applies(run).then_some(entry);
        match attach_pair(ebpf, btf, entry, exit) {
            Ok(links) => {
                attached.links.extend(links);
                // Both tracepoint programs stand aside, the entry's too when not needed.
                attached
                    .replaced
                    .extend([pair[0].replaces(), exit.replaces()]);
            }
            Err(e) if attached.links.is_empty() => {
                attached.refused = Some(Refusal::Refused {
                    function: exit.function(),
                    why: refusal(&e),
                });
                break;
            }
            // This syscall's entry point is missing or not attachable here: its tracepoints
            // stand in.
            Err(_) => {}
        }
    }
    attached
}

/// Why a load or attach failed, in one line: for a load the kernel refused, the system call's
/// error and the verifier's verdict; otherwise the error itself.
fn refusal(error: &anyhow::Error) -> String {
    match error.downcast_ref::<ProgramError>() {
        Some(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => load_refusal(io_error, &verifier_log.to_string()),
        _ => format!("{error:#}"),
    }
}

/// The verifier's verdict: the last line of its log that is not the statistics it appends
/// after it (`processed N insns …`, `verification time …`, `stack depth …`).
pub(super) fn load_refusal(io_error: &std::io::Error, verifier_log: &str) -> String {
    const STATISTICS: [&str; 3] = ["processed ", "verification time", "stack depth"];
    let verdict = verifier_log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !STATISTICS.iter().any(|s| l.starts_with(s)));
    match verdict {
        Some(verdict) => format!("loading failed: {io_error} ({})", verdict.trim()),
        None => format!("loading failed: {io_error}"),
    }
}

/// Both ends of one syscall (or its exit alone), or neither: a pair half on a trampoline and
/// half on a tracepoint would work (records pair up by thread), but is harder to reason about
/// for no gain.
fn attach_pair(
    ebpf: &mut Ebpf,
    btf: &Btf,
    entry: Option<Trampoline>,
    exit: Trampoline,
) -> anyhow::Result<Vec<Link>> {
    let function = exit.function();
    let mut links = Vec::with_capacity(2);
    if let Some(entry) = entry {
        let entry_program: &mut FEntry = program(ebpf, entry)?.try_into()?;
        entry_program.load(function, btf)?;
        let id = entry_program.attach()?;
        links.push(Link::Entry(entry_program.take_link(id)?));
    }
    let exit_program: &mut FExit = program(ebpf, exit)?.try_into()?;
    exit_program.load(function, btf)?;
    let id = exit_program.attach()?;
    links.push(Link::Exit(exit_program.take_link(id)?));
    Ok(links)
}

fn program(ebpf: &mut Ebpf, trampoline: Trampoline) -> anyhow::Result<&mut aya::programs::Program> {
    ebpf.program_mut(trampoline.name())
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", trampoline.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_load_says_the_verifiers_verdict() {
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(
            load_refusal(&einval, "func#0 @0\ninvalid bpf_context access off=8\n\n"),
            "loading failed: Invalid argument (os error 22) (invalid bpf_context access off=8)"
        );
        // As 6.x kernels end a refusal: the reason, then the statistics.
        let log = "0: R1=ctx() R10=fp0\n0: (79) r2 = *(u64 *)(r1 +8)\n\
                   invalid bpf_context access off=8 size=8\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n\
                   verification time 12 usec\nstack depth 0\n";
        assert_eq!(
            load_refusal(&einval, log),
            "loading failed: Invalid argument (os error 22) (invalid bpf_context access off=8 size=8)"
        );
        assert_eq!(
            load_refusal(&einval, ""),
            "loading failed: Invalid argument (os error 22)"
        );
        let plain = anyhow::Error::from(ProgramError::NotAttached);
        assert_eq!(refusal(&plain), "the program is not attached");
    }
}
