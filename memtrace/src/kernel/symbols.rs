//! Names for the frames of the stacks `--stacks` counts, with blazesym (libbpf's symbolizer):
//! function, module and offset from ELF symbols, file and line where DWARF has them; kernel
//! frames from kallsyms.
//!
//! A user stack must be resolved while its process lives: an address means something only
//! with the process's memory map, gone at exit. The session resolves each stack as soon as
//! the kernel announces it. What cannot be named says why, and a stack the walk may not
//! have recorded whole says so (see [`super::unwind`]).

use std::{
    collections::HashMap,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use blazesym::{
    MaybeDefault, Pid,
    normalize::{NormalizeOpts, Normalizer, Reason as NormalizeReason, UserMeta},
    symbolize::{
        Input, Reason, Symbolized, Symbolizer,
        source::{Elf, Kernel, Source},
    },
};
use memtrace_common::stacks::{Frames, LEAF_READ, NO_REGISTERS, WALK_FRAMES};

use super::unwind::{Keeping, Unwinder};

/// One frame, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub address: u64,
    /// The function, demangled; None when it cannot be named ([`Frame::unknown`] says why).
    pub function: Option<String>,
    /// Bytes from the function's start.
    pub offset: u64,
    /// The executable or library (path), or `[kernel]`.
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub unknown: Option<String>,
    /// Not walked by the kernel: the return address left at the stack top by a function that
    /// had not set up its frame, confirmed by that function's unwind information.
    pub recovered: bool,
    /// Functions the compiler inlined at this address, innermost first: `(function, file,
    /// line)`. They are callers too, with no frame of their own.
    pub inlined: Vec<(String, Option<String>, Option<u32>)>,
}

/// A stack with its frames named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The walk stopped at the frames kept: the outermost callers are missing.
    pub truncated: bool,
    /// Why frames may be missing or wrong, when they may (a function without a frame pointer,
    /// a process that exited before it could be read).
    pub doubts: Vec<String>,
}

/// Where one address of a user stack lies.
#[derive(Clone, Debug)]
enum Place {
    /// In a file: the path as the process maps it, the path memtrace reads it by, and the
    /// offset in the file.
    File {
        shown: String,
        read_as: PathBuf,
        offset: u64,
    },
    /// Named already (the vDSO).
    Named(Frame),
    Unknown(String),
}

/// A user stack placed in its files while its process lived, to be named later.
#[derive(Clone, Debug)]
pub struct Located {
    /// The walked frames, then the leaf word if it was read.
    addresses: Vec<u64>,
    places: Vec<Place>,
    leaf_read: bool,
    frames: Frames,
}

/// Mapped files kept open by (device, inode), with the path to read each by.
type Modules = HashMap<(u64, u64), (std::fs::File, PathBuf)>;

/// Files kept open to name frames after their process exits.
const MAX_OPEN_MODULES: usize = 512;

/// Symbolizes stacks; caches what it reads (symbol tables, unwind tables) across stacks.
pub struct Symbols {
    /// Mapped files kept open by (device, inode), with the path to read each by.
    modules: Modules,
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    unwinder: Unwinder,
    /// `kernel.perf_event_max_stack`: walks stop there too.
    walk_limit: usize,
}

impl Default for Symbols {
    fn default() -> Self {
        let walk_limit = std::fs::read_to_string(memtrace_common::stacks::MAX_STACK_SYSCTL)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(127);
        Self {
            modules: HashMap::new(),
            symbolizer: Symbolizer::new(),
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            unwinder: Unwinder::default(),
            walk_limit,
        }
    }
}

impl Symbols {
    /// Names a kernel stack (a reclaim stall's).
    pub fn kernel(&mut self, frames: &Frames) -> Stack {
        let ips = frames.ips();
        let source = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            ..Kernel::default()
        });
        // Return addresses (all but the first) are named by their call instruction.
        let calls: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| ip.saturating_sub(u64::from(i > 0)))
            .collect();
        let named = self.symbolizer.symbolize(&source, Input::AbsAddr(&calls));
        let frames_out = ips
            .iter()
            .enumerate()
            .map(|(i, &address)| {
                let mut frame = Frame {
                    address,
                    module: Some("[kernel]".to_owned()),
                    ..Frame::default()
                };
                match named.as_ref().map(|n| n.get(i)) {
                    Ok(Some(symbolized)) => {
                        name(&mut frame, symbolized);
                        frame.offset += u64::from(i > 0 && frame.function.is_some());
                    }
                    Ok(None) => frame.unknown = Some("not symbolized".to_owned()),
                    Err(e) => frame.unknown = Some(format!("kallsyms unreadable: {e}")),
                }
                frame
            })
            .collect();
        Stack {
            frames: frames_out,
            truncated: self.truncated(frames),
            doubts: Vec::new(),
        }
    }

    /// Places each address of a user stack of process `pid` in its file, reading the
    /// process's memory map: this must be done while the process lives. Naming the frames
    /// ([`Symbols::name`]) can wait: the files are kept open.
    pub fn locate(&mut self, pid: u32, frames: &Frames) -> Located {
        let ips = frames.ips();
        let leaf = (frames.flags & LEAF_READ != 0).then_some(frames.leaf);
        let mut addresses: Vec<u64> = ips.to_vec();
        addresses.extend(leaf);
        let opts = NormalizeOpts {
            sorted_addrs: false,
            map_files: true,
            ..NormalizeOpts::default()
        };
        let Self {
            normalizer,
            modules,
            ..
        } = self;
        let places = match normalizer.normalize_user_addrs_opts(Pid::from(pid), &addresses, &opts) {
            Ok(normalized) => normalized
                .outputs
                .iter()
                .enumerate()
                .map(|(i, &(offset, meta))| match &normalized.meta[meta] {
                    UserMeta::Elf(elf) => open(modules, &elf.path, offset),
                    UserMeta::Unknown(unknown) => {
                        Place::Unknown(normalize_reason(unknown.reason, i).to_owned())
                    }
                    UserMeta::Sym(sym) => Place::Named(Frame {
                        function: Some(sym.name.to_string()),
                        offset: sym.offset as u64,
                        module: sym
                            .module
                            .as_ref()
                            .map(|m| m.to_string_lossy().into_owned()),
                        ..Frame::default()
                    }),
                    _ => Place::Unknown("in a kind of file memtrace cannot read".to_owned()),
                })
                .collect(),
            Err(e) => {
                let why = format!("the process's memory map could not be read (it exited?): {e}");
                vec![Place::Unknown(why); addresses.len()]
            }
        };
        Located {
            addresses,
            places,
            leaf_read: leaf.is_some(),
            frames: *frames,
        }
    }

    /// Names the frames of a located user stack, and says where the walk may be wrong.
    pub fn name(&mut self, located: &Located) -> Stack {
        let mut named: Vec<Frame> = located
            .addresses
            .iter()
            .zip(&located.places)
            .map(|(&address, place)| match place {
                Place::File { shown, .. } => Frame {
                    address,
                    module: Some(shown.clone()),
                    ..Frame::default()
                },
                Place::Unknown(why) => Frame {
                    address,
                    unknown: Some(why.clone()),
                    ..Frame::default()
                },
                Place::Named(frame) => Frame {
                    address,
                    ..frame.clone()
                },
            })
            .collect();
        self.name_in_files(&located.places, &mut named);
        let mut stack = Stack {
            truncated: self.truncated(&located.frames),
            ..Stack::default()
        };
        if located
            .places
            .iter()
            .all(|p| matches!(p, Place::Unknown(_)))
        {
            stack.frames = named;
            stack.frames.truncate(located.frames.ips().len());
            stack
                .doubts
                .push("no frame could be placed in a file (the process exited before memtrace read its memory map?)".to_owned());
            return stack;
        }
        self.check_walk(located, named, &mut stack);
        stack
    }

    /// Symbolizes the located addresses, one batch per file.
    fn name_in_files(&mut self, places: &[Place], named: &mut [Frame]) {
        let mut by_file: HashMap<&Path, Vec<(usize, u64)>> = HashMap::new();
        for (i, place) in places.iter().enumerate() {
            if let Place::File {
                read_as, offset, ..
            } = place
            {
                by_file
                    .entry(read_as.as_path())
                    .or_default()
                    .push((i, *offset));
            }
        }
        for (path, entries) in by_file {
            // A return address (every frame but the first) is named by its call instruction,
            // the byte before: the address itself may already be the next line, or the next
            // function.
            let offsets: Vec<u64> = entries
                .iter()
                .map(|&(i, offset)| offset.saturating_sub(u64::from(i > 0)))
                .collect();
            let indices: Vec<usize> = entries.iter().map(|&(i, _)| i).collect();
            let source = Source::Elf(Elf::new(path));
            match self
                .symbolizer
                .symbolize(&source, Input::FileOffset(&offsets))
            {
                Ok(results) => {
                    for (&i, symbolized) in indices.iter().zip(&results) {
                        name(&mut named[i], symbolized);
                        if i > 0 && named[i].function.is_some() {
                            named[i].offset += 1;
                        }
                    }
                }
                Err(e) => {
                    for &i in &indices {
                        let module = named[i].module.clone().unwrap_or_default();
                        named[i].unknown = Some(format!("cannot read {module}: {e}"));
                    }
                }
            }
        }
    }

    /// Puts the frames in order with what the unwind information says of the walk: adds back
    /// a caller the walk skipped (from the stack top), and says where frames may be missing.
    fn check_walk(&mut self, located: &Located, mut named: Vec<Frame>, stack: &mut Stack) {
        let frames = &located.frames;
        let leaf = located.leaf_read.then(|| named.pop()).flatten();
        let walked = named.len();
        let mut out: Vec<Frame> = Vec::with_capacity(walked + 1);
        let mut doubt: Option<String> = None;
        for (i, frame) in named.into_iter().enumerate() {
            // Frame 0 is where the thread was; the others are return addresses, whose call
            // instruction is the byte before.
            let keeping = match &located.places[i] {
                Place::File {
                    read_as, offset, ..
                } => self
                    .unwinder
                    .keeping(read_as, offset.saturating_sub(u64::from(i > 0))),
                _ => Keeping::Unknown,
            };
            let function = frame.function.clone().unwrap_or_else(|| "?".to_owned());
            out.push(frame);
            if doubt.is_some() {
                continue;
            }
            match keeping {
                Keeping::FramePointer => {}
                Keeping::NothingPushed if i == 0 => match &leaf {
                    Some(caller) if walked > 0 => {
                        let mut caller = caller.clone();
                        caller.recovered = true;
                        out.push(caller);
                    }
                    _ => {
                        let why = if frames.flags & NO_REGISTERS != 0 {
                            "its saved registers were not found"
                        } else {
                            "the word at the stack top was not a return address"
                        };
                        doubt = Some(format!(
                            "the caller of {function} is missing: it had not set up a frame, and {why}"
                        ));
                    }
                },
                Keeping::NothingPushed | Keeping::NoFramePointer if i + 1 < walked => {
                    doubt = Some(format!(
                        "frames after {function} may be missing or wrong: it keeps no frame pointer"
                    ));
                }
                Keeping::NothingPushed | Keeping::NoFramePointer => {
                    doubt = Some(format!(
                        "the walk ended at {function}, which keeps no frame pointer: its callers, if any, are not recorded"
                    ));
                }
                Keeping::Unknown if out.last().is_some_and(|f| f.unknown.is_some()) => {}
                Keeping::Unknown => {
                    doubt = Some(format!(
                        "no unwind information for {function}: whether frames after it are missing cannot be checked"
                    ));
                }
            }
        }
        stack.frames = out;
        stack.doubts.extend(doubt);
    }

    fn truncated(&self, frames: &Frames) -> bool {
        // Below WALK_FRAMES, the sysctl stops walks before the extra slot could tell.
        frames.truncated()
            || (self.walk_limit < WALK_FRAMES && frames.len as usize >= self.walk_limit)
    }
}

/// A mapped file, opened through `/proc/PID/map_files` (so containers' files and deleted ones
/// work) and kept open in `modules`, at most [`MAX_OPEN_MODULES`] of them.
fn open(modules: &mut Modules, map_file: &Path, offset: u64) -> Place {
    let shown = std::fs::read_link(map_file).map_or_else(
        |_| map_file.to_string_lossy().into_owned(),
        |p| p.to_string_lossy().into_owned(),
    );
    let Ok(file) = std::fs::File::open(map_file) else {
        return Place::Unknown(format!("{shown} could not be opened"));
    };
    let Ok(meta) = file.metadata() else {
        return Place::Unknown(format!("{shown} could not be read"));
    };
    let identity = (meta.dev(), meta.ino());
    let read_as = match modules.get(&identity) {
        Some(kept) => kept.1.clone(),
        None if modules.len() < MAX_OPEN_MODULES => {
            let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            modules.insert(identity, (file, path.clone()));
            path
        }
        // Past the limit: by name, which works for files memtrace sees where the process
        // does (not in another mount namespace, not deleted).
        None => PathBuf::from(&shown),
    };
    Place::File {
        shown,
        read_as,
        offset,
    }
}

/// Why an address could not be placed in a file, for people. `index` 0 is where the thread
/// was; the others came from the frame-pointer walk.
fn normalize_reason(reason: NormalizeReason, index: usize) -> &'static str {
    match reason {
        NormalizeReason::Unmapped if index > 0 => {
            "not in the process's memory: the frame-pointer walk went astray (code without frame pointers)"
        }
        NormalizeReason::Unmapped => "not in the process's memory map",
        NormalizeReason::MissingComponent => {
            "in anonymous memory: JIT-compiled or generated code, not a file"
        }
        _ => "not in a file memtrace can read",
    }
}

fn name(frame: &mut Frame, symbolized: &Symbolized<'_>) {
    match symbolized {
        Symbolized::Sym(sym) => {
            frame.function = Some(sym.name.to_string());
            frame.offset = sym.offset as u64;
            // Files are read through /proc/self/fd: keep the name the process maps them by.
            if frame.module.is_none()
                && let Some(module) = &sym.module
            {
                frame.module = Some(module.to_string_lossy().into_owned());
            }
            if let Some(code) = &sym.code_info {
                frame.file = Some(code.file.to_string_lossy().into_owned());
                frame.line = code.line;
            }
            // blazesym lists them outermost first.
            frame.inlined = sym
                .inlined
                .iter()
                .rev()
                .map(|f| {
                    let code = f.code_info.as_ref();
                    (
                        f.name.to_string(),
                        code.map(|c| c.file.to_string_lossy().into_owned()),
                        code.and_then(|c| c.line),
                    )
                })
                .collect();
        }
        Symbolized::Unknown(reason) => frame.unknown = Some(unknown_reason(*reason).to_owned()),
    }
}

fn unknown_reason(reason: Reason) -> &'static str {
    match reason {
        Reason::MissingSyms => "no symbols: the file is stripped",
        Reason::UnknownAddr => "no symbol covers this address",
        Reason::Unmapped => "not in the process's memory map",
        Reason::MissingComponent => "in anonymous memory: JIT-compiled or generated code",
        Reason::InvalidFileOffset => "not in the file's code",
        _ => "could not be symbolized",
    }
}
