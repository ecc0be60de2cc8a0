//! How the Go runtime reads a GODEBUG setting, per Go version, and what a binary compiled in.
//!
//! Checked against the runtime's source of Go 1.19 and 1.21–1.27 (`runtime/runtime1.go`
//! `parsedebugvars`/`parsegodebug`, `runtime/string.go` `atoi64`, `internal/strconv`):
//! - The runtime splits a GODEBUG list at `,` and each field at its first `=`; the key must
//!   match exactly. Fields are applied left to right, so the last valid one wins; a value the
//!   runtime cannot parse is skipped and leaves the earlier one in force.
//! - Up to Go 1.25 values go through the runtime's own `atoi32`: an optional `-`, then decimal
//!   digits that may be none at all (`-` alone reads as 0), within int32. `+0` is not a number.
//! - From Go 1.26 they go through `strconv.ParseInt(value, 10, 32)`: an optional `+` or `-`, at
//!   least one digit, within int32.
//! - From Go 1.21 the runtime first applies a compiled-in default, `runtime.godebugDefault`,
//!   then `GODEBUG` from the environment: the environment wins. The go command sets that
//!   default by passing `-X=runtime.godebugDefault=<DefaultGODEBUG>` to the linker before the
//!   user's `-ldflags`, and the linker keeps the last `-X` for a name, so a user's
//!   `-X runtime.godebugDefault=…` replaces the whole default. Before 1.21 the variable does
//!   not exist (1.19's source; a public copy of 1.20's `runtime.go` has only `godebugenv`) and
//!   the linker ignores `-X` for a missing symbol (`addstrdata`).
//! - `madvdontneed` is a plain (not atomic) runtime variable: it is read once at start, and a
//!   later `os.Setenv("GODEBUG", …)` does not change it (`reparsedebugvars` updates only the
//!   atomic ones).

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    buildinfo::{BuildInfo, version_number},
    ldflags::{self, Override},
};

/// The first Go whose runtime has a compiled-in GODEBUG default.
pub const FIRST_WITH_COMPILED_DEFAULT: (u32, u32) = (1, 21);
/// The first Go whose runtime parses GODEBUG numbers with `strconv.ParseInt`.
const FIRST_WITH_PARSE_INT: (u32, u32) = (1, 26);
/// The build setting the go command records when it built with `-trimpath`; it then leaves
/// `-ldflags` out (they may hold local paths, go.dev/issue/52372).
const TRIMPATH: &str = "-trimpath";
/// A build setting the go command always records (with `-buildmode` since Go 1.21): its
/// absence means the binary was not built by the go command, so nothing says what the linker
/// was given.
const ALWAYS_RECORDED: &str = "-compiler";

/// How a Go version's runtime reads a GODEBUG number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// Go ≤ 1.25: the runtime's `atoi32`.
    Atoi32,
    /// Go ≥ 1.26: `strconv.ParseInt(value, 10, 32)`.
    ParseInt,
}

impl Syntax {
    /// The syntax of Go `version` (`(major, minor)`).
    pub fn of(version: (u32, u32)) -> Self {
        if version >= FIRST_WITH_PARSE_INT {
            Self::ParseInt
        } else {
            Self::Atoi32
        }
    }

    /// The number `value` reads as, or `None` when the runtime skips it.
    pub fn parse(self, value: &str) -> Option<i32> {
        match self {
            Self::Atoi32 => atoi32(value),
            Self::ParseInt => parse_int32(value),
        }
    }

    /// The rule in words, for a reason that says why a value was skipped.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Atoi32 => "Go ≤ 1.25 reads an optional '-' and digits",
            Self::ParseInt => "Go ≥ 1.26 reads an optional '+' or '-' and digits",
        }
    }
}

/// The runtime's `atoi32` (Go ≤ 1.25): `atoi64` then a range check. `atoi64` strips one `-`
/// and accepts the digits that follow, even none.
fn atoi32(value: &str) -> Option<i32> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if value.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().try_fold(0i64, |n, digit| {
        n.checked_mul(10)?.checked_add(i64::from(digit - b'0'))
    })?;
    let n = if negative { -magnitude } else { magnitude };
    i32::try_from(n).ok()
}

/// `strconv.ParseInt(value, 10, 32)` (Go ≥ 1.26): one optional sign, then at least one digit.
fn parse_int32(value: &str) -> Option<i32> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// What a GODEBUG list says about one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not mentioned.
    Absent,
    /// The value in force: the last one the runtime could parse, and how it was written.
    Set { value: i32, written: String },
    /// Mentioned, but the runtime parses none of its values; the last one as written.
    Skipped { written: String },
}

/// Looks `key` up in a GODEBUG-style list (`k=v,k=v`) as the runtime applies it at start.
pub fn lookup(settings: &str, key: &str, syntax: Syntax) -> Lookup {
    let mut found = Lookup::Absent;
    for field in settings.split(',') {
        let Some((name, written)) = field.split_once('=') else {
            continue;
        };
        if name != key {
            continue;
        }
        found = match syntax.parse(written) {
            Some(value) => Lookup::Set {
                value,
                written: written.to_owned(),
            },
            // A skipped value leaves an earlier valid one in force.
            None if matches!(found, Lookup::Set { .. }) => continue,
            None => Lookup::Skipped {
                written: written.to_owned(),
            },
        };
    }
    found
}

impl Lookup {
    /// The value in force, if any.
    pub fn value(&self) -> Option<i32> {
        match self {
            Self::Set { value, .. } => Some(*value),
            Self::Absent | Self::Skipped { .. } => None,
        }
    }
}

/// The GODEBUG default compiled into a binary (`runtime.godebugDefault`), as far as its build
/// information tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Compiled {
    /// Go before 1.21: the runtime has no compiled-in default.
    None,
    /// What the runtime parses before the environment.
    Known { value: String, from: Source },
    /// It cannot be read, and why.
    Unreadable { reason: String },
}

/// Where a known compiled-in default comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The go command's `DefaultGODEBUG` build setting (empty when not recorded).
    DefaultGodebug,
    /// `-X runtime.godebugDefault=…` in the recorded `-ldflags`, which replaces it.
    Ldflags,
}

impl Compiled {
    /// Reads it from a binary's build information.
    pub fn of(info: &BuildInfo) -> Self {
        let Some(version) = version_number(&info.go_version) else {
            return Self::unreadable("the Go version cannot be read");
        };
        if version < FIRST_WITH_COMPILED_DEFAULT {
            return Self::None;
        }
        if info.setting(ALWAYS_RECORDED).is_none() {
            return Self::unreadable(
                "the binary records no build settings (not built by the go command), so \
                 nothing says whether -X runtime.godebugDefault=… was given to the linker",
            );
        }
        let recorded = || Self::Known {
            value: info.default_godebug().unwrap_or_default().to_owned(),
            from: Source::DefaultGodebug,
        };
        match info.setting(ldflags::SETTING) {
            Some(flags) => match ldflags::godebug_default(flags, info.main_path()) {
                Override::None => recorded(),
                Override::Set(value) => Self::Known {
                    value,
                    from: Source::Ldflags,
                },
                Override::Unknown(why) => Self::unreadable(why),
            },
            None if info.setting(TRIMPATH) == Some("true") => Self::unreadable(
                "built with -trimpath, so the go command did not record -ldflags, where \
                 -X runtime.godebugDefault=… can replace DefaultGODEBUG",
            ),
            None => recorded(),
        }
    }

    fn unreadable(reason: &str) -> Self {
        Self::Unreadable {
            reason: reason.to_owned(),
        }
    }

    /// The settings the runtime parses before the environment; `None` when there are none or
    /// they cannot be read.
    pub fn settings(&self) -> Option<&str> {
        match self {
            Self::Known { value, .. } => Some(value),
            Self::None | Self::Unreadable { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build info as the go command records it: `settings` as `key=value` lines.
    fn built(version: &str, settings: &[&str]) -> BuildInfo {
        BuildInfo {
            go_version: version.to_owned(),
            module_info: Some("path\texample.com/svc\n".to_owned()),
            settings: settings
                .iter()
                .filter_map(|line| line.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        }
    }

    fn known(value: &str, from: Source) -> Compiled {
        Compiled::Known {
            value: value.to_owned(),
            from,
        }
    }

    #[test]
    fn the_compiled_in_default_from_build_settings() {
        let x = "-ldflags=-s -X=runtime.godebugDefault=madvdontneed=0";
        let default = "DefaultGODEBUG=panicnil=1";
        // Go before 1.21 has none, whatever the flags.
        assert_eq!(
            Compiled::of(&built("go1.20.14", &["-compiler=gc", x])),
            Compiled::None
        );
        assert_eq!(
            Compiled::of(&built("go1.21.0", &["-compiler=gc", default])),
            known("panicnil=1", Source::DefaultGodebug)
        );
        assert_eq!(
            Compiled::of(&built("go1.27.3", &["-compiler=gc"])),
            known("", Source::DefaultGodebug)
        );
        assert_eq!(
            Compiled::of(&built(
                "go1.27.3",
                &["-compiler=gc", "-ldflags=-s -w", default]
            )),
            known("panicnil=1", Source::DefaultGodebug)
        );
        // The user's -X comes after the go command's on the linker's command line and wins.
        assert_eq!(
            Compiled::of(&built("go1.27.3", &["-compiler=gc", x, default])),
            known("madvdontneed=0", Source::Ldflags)
        );
        let unreadable = |settings: &[&str]| match Compiled::of(&built("go1.22.10", settings)) {
            Compiled::Unreadable { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert!(
            unreadable(&["-compiler=gc", "-trimpath=true"]).starts_with("built with -trimpath")
        );
        assert!(unreadable(&[]).starts_with("the binary records no build settings"));
        assert!(unreadable(&["-compiler=gc", "-ldflags=-s @flags"]).contains("(@file)"));
        let unknown_version = Compiled::of(&built("devel +abc", &["-compiler=gc"]));
        assert!(matches!(unknown_version, Compiled::Unreadable { .. }));
    }

    #[test]
    fn syntax_by_version() {
        assert_eq!(Syntax::of((1, 12)), Syntax::Atoi32);
        assert_eq!(Syntax::of((1, 19)), Syntax::Atoi32);
        assert_eq!(Syntax::of((1, 25)), Syntax::Atoi32);
        assert_eq!(Syntax::of((1, 26)), Syntax::ParseInt);
        assert_eq!(Syntax::of((1, 27)), Syntax::ParseInt);
        assert_eq!(Syntax::of((2, 0)), Syntax::ParseInt);
    }

    /// Each value as Go ≤ 1.25 and Go ≥ 1.26 read it (observed with strace on go1.19.8 and
    /// go1.27.3 builds for `+0`, `-` and a skipped value after a valid one).
    #[test]
    fn odd_values_per_version() {
        let cases: [(&str, Option<i32>, Option<i32>); 16] = [
            ("0", Some(0), Some(0)),
            ("1", Some(1), Some(1)),
            ("00", Some(0), Some(0)),
            ("-0", Some(0), Some(0)),
            ("+0", None, Some(0)),
            ("+1", None, Some(1)),
            ("-", Some(0), None),
            ("+", None, None),
            ("", None, None),
            ("1x", None, None),
            (" 0", None, None),
            ("0x10", None, None),
            ("1_0", None, None),
            ("--1", None, None),
            ("-2147483648", Some(i32::MIN), Some(i32::MIN)),
            ("2147483648", None, None),
        ];
        for (value, old, new) in cases {
            assert_eq!(Syntax::Atoi32.parse(value), old, "Go ≤ 1.25 on {value:?}");
            assert_eq!(Syntax::ParseInt.parse(value), new, "Go ≥ 1.26 on {value:?}");
        }
        assert_eq!(Syntax::Atoi32.parse("99999999999999999999"), None);
        assert_eq!(Syntax::Atoi32.parse("-9223372036854775808"), None);
    }

    #[test]
    fn the_last_valid_setting_wins() {
        use Syntax::{Atoi32, ParseInt};
        let set = |value, written: &str| Lookup::Set {
            value,
            written: written.to_owned(),
        };
        let key = "madvdontneed";
        assert_eq!(
            lookup("madvdontneed=0,madvdontneed=1", key, Atoi32),
            set(1, "1")
        );
        assert_eq!(
            lookup("madvdontneed=1,gctrace=1,madvdontneed=0", key, Atoi32),
            set(0, "0")
        );
        // A value the runtime skips leaves the earlier one in force.
        assert_eq!(
            lookup("madvdontneed=0,madvdontneed=x", key, Atoi32),
            set(0, "0")
        );
        assert_eq!(
            lookup("madvdontneed=0,madvdontneed=+1", key, Atoi32),
            set(0, "0")
        );
        assert_eq!(
            lookup("madvdontneed=0,madvdontneed=+1", key, ParseInt),
            set(1, "+1")
        );
        let skipped = Lookup::Skipped {
            written: "+0".to_owned(),
        };
        assert_eq!(lookup("madvdontneed=+0", key, Atoi32), skipped);
        assert_eq!(lookup("madvdontneed=+0", key, ParseInt), set(0, "+0"));
        // The value is everything after the first '='.
        assert_eq!(
            lookup("madvdontneed=0=1", key, Atoi32),
            Lookup::Skipped {
                written: "0=1".to_owned()
            }
        );
        for absent in [
            "",
            "madvdontneed",
            "xmadvdontneed=0,madvdontneedx=0",
            " madvdontneed=0",
        ] {
            assert_eq!(lookup(absent, key, Atoi32), Lookup::Absent, "{absent:?}");
        }
        assert_eq!(
            lookup("gctrace=1,,madvdontneed=0,", key, Atoi32),
            set(0, "0")
        );
    }
}
