//! The `-ldflags` build setting, read the way the go command and the linker read it, to find
//! `-X runtime.godebugDefault=…`.
//!
//! Checked against Go 1.19 and 1.21–1.27 (`cmd/go/internal/load/flag.go` `PerPackageFlag`,
//! `cmd/internal/quoted.Split`, `cmd/link/internal/ld` `main.go` and `addstrdata1`,
//! `cmd/internal/objabi.Flagparse`):
//! - The setting records the last `-ldflags` flag as written, `[pattern=]flags`. Without a
//!   pattern the flags apply to the packages named on the command line (the main package);
//!   with one, to the packages it matches, and earlier `-ldflags` flags are not recorded.
//! - The flags are split at spaces, tabs and newlines; a word that starts with `'` or `"` runs
//!   to the next such quote, with no escapes.
//! - The linker parses them with Go's `flag` package: `-name`, `--name`, `-name=value`, or
//!   `-name value` for flags that are not boolean. `@file` words are replaced by the file's
//!   contents before parsing. `-X importpath.name=value` splits at its first `=`, and the last
//!   `-X` for a name wins.

/// The build setting that records the flags.
pub const SETTING: &str = "-ldflags";
/// The name a `-X` sets to replace the compiled-in GODEBUG default.
const GODEBUG_DEFAULT: &str = "runtime.godebugDefault";
/// The pattern that matches every package.
const ALL: &str = "all";
/// The linker's boolean flags in Go 1.19–1.27: they never take the next word as their value.
/// Every other flag given as `-name` does.
const BOOL_FLAGS: [&str; 24] = [
    "8",
    "V",
    "a",
    "asan",
    "aslr",
    "bindnow",
    "c",
    "checklinkname",
    "compressdwarf",
    "d",
    "debugnosplit",
    "dumpdep",
    "e",
    "f",
    "g",
    "h",
    "linkshared",
    "msan",
    "n",
    "pruneweakmap",
    "race",
    "s",
    "v",
    "w",
];

/// What the recorded flags do to `runtime.godebugDefault`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Override {
    /// No `-X` sets it: the go command's DefaultGODEBUG stands.
    None,
    /// The last `-X` sets it to this.
    Set(String),
    /// It cannot be told from the record, and why.
    Unknown(&'static str),
}

/// Reads the recorded `-ldflags` of a binary whose main package is `main_path`.
pub fn godebug_default(recorded: &str, main_path: Option<&str>) -> Override {
    let Some(flags) = flags_for_main(recorded.trim(), main_path) else {
        return Override::Unknown(
            "the recorded -ldflags name packages that may not include the main package, and \
             earlier -ldflags flags are not recorded",
        );
    };
    let Some(words) = split(flags) else {
        return Override::Unknown("the recorded -ldflags have an unterminated quote");
    };
    if words.iter().any(|word| word.starts_with('@')) {
        return Override::Unknown(
            "the recorded -ldflags read more flags from a file (@file) that is not recorded",
        );
    }
    last_x(&words).map_or(Override::None, Override::Set)
}

/// The flags of `[pattern=]flags` when they apply to the main package. A value starting with
/// `-` has no pattern; a pattern counts only when it is `all` or the main package's path.
fn flags_for_main<'a>(value: &'a str, main_path: Option<&str>) -> Option<&'a str> {
    if value.starts_with('-') || value.is_empty() {
        return Some(value);
    }
    let (pattern, flags) = value.split_once('=')?;
    let pattern = pattern.trim();
    (pattern == ALL || Some(pattern) == main_path).then_some(flags)
}

/// `cmd/internal/quoted.Split`: words separated by ASCII spaces, a quoted word taken whole.
fn split(mut rest: &str) -> Option<Vec<&str>> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let mut words = Vec::new();
    loop {
        rest = rest.trim_start_matches(is_space);
        let Some(first) = rest.chars().next() else {
            return Some(words);
        };
        if first == '"' || first == '\'' {
            let (word, after) = rest.get(1..)?.split_once(first)?;
            words.push(word);
            rest = after;
        } else {
            let end = rest.find(is_space).unwrap_or(rest.len());
            let (word, after) = rest.split_at(end);
            words.push(word);
            rest = after;
        }
    }
}

/// The value the last `-X runtime.godebugDefault=…` gives, walking the words as Go's `flag`
/// package does: parsing stops at the first word that is not a flag, or after `--`.
fn last_x(words: &[&str]) -> Option<String> {
    let mut found = None;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let Some(flag) = flag_name(word) else {
            break;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        let value = match inline {
            Some(value) => Some(value),
            None if BOOL_FLAGS.contains(&name) => None,
            None => words.next().copied(),
        };
        if name == "X"
            && let Some(definition) = value
            && let Some((symbol, godebug)) = definition.split_once('=')
            && symbol == GODEBUG_DEFAULT
        {
            found = Some(godebug.to_owned());
        }
    }
    found
}

/// `-name…` or `--name…` without its dashes; `None` for a word that ends flag parsing.
fn flag_name<'a>(word: &&'a str) -> Option<&'a str> {
    let flag = word.strip_prefix('-')?;
    let flag = flag.strip_prefix('-').unwrap_or(flag);
    // "-" and "--" end parsing; "---x" is a syntax error that fails the link.
    (!flag.is_empty() && !flag.starts_with(['-', '='])).then_some(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str) -> Override {
        Override::Set(value.to_owned())
    }

    fn read(recorded: &str) -> Override {
        godebug_default(recorded, Some("example.com/svc"))
    }

    #[test]
    fn x_forms() {
        let free = set("madvdontneed=0");
        assert_eq!(read("-X=runtime.godebugDefault=madvdontneed=0"), free);
        assert_eq!(read("-X runtime.godebugDefault=madvdontneed=0"), free);
        assert_eq!(read("--X=runtime.godebugDefault=madvdontneed=0"), free);
        assert_eq!(
            read("  -s -w -X 'runtime.godebugDefault=madvdontneed=0'  "),
            free
        );
        assert_eq!(read("-X \"runtime.godebugDefault=madvdontneed=0\""), free);
        // Several settings, and an empty default.
        assert_eq!(
            read("-X=runtime.godebugDefault=panicnil=1,madvdontneed=0"),
            set("panicnil=1,madvdontneed=0")
        );
        assert_eq!(read("-X=runtime.godebugDefault="), set(""));
    }

    #[test]
    fn several_x_flags_the_last_wins() {
        assert_eq!(
            read(
                "-X main.version=1.2 -X=runtime.godebugDefault=madvdontneed=0 \
                 -X runtime.godebugDefault=madvdontneed=1 -X main.commit=abc"
            ),
            set("madvdontneed=1")
        );
        assert_eq!(
            read("-X main.version=1.2 -X=main.godebugDefault=x"),
            Override::None
        );
        assert_eq!(read("-s -w"), Override::None);
        assert_eq!(read(""), Override::None);
        // The symbol is everything before the first '='.
        assert_eq!(read("-X=runtime.godebugDefault"), Override::None);
        assert_eq!(
            read("-X=xruntime.godebugDefault=madvdontneed=0"),
            Override::None
        );
    }

    #[test]
    fn quoting_follows_the_go_command() {
        // A quote inside a word is an ordinary character: the word ends at the space.
        assert_eq!(
            read("-X=runtime.godebugDefault=\"madvdontneed=0 x\""),
            set("\"madvdontneed=0")
        );
        // A quoted word ends at its closing quote, and the next word starts right after.
        assert_eq!(
            split("'a b'c \"d\te\" f\n\rg"),
            Some(vec!["a b", "c", "d\te", "f", "g"])
        );
        // No escapes inside quotes.
        assert_eq!(split("'it\\'s'"), Some(vec!["it\\", "s'"]));
        assert_eq!(
            read("-X 'runtime.godebugDefault=madvdontneed=0"),
            Override::Unknown("the recorded -ldflags have an unterminated quote")
        );
    }

    #[test]
    fn flags_that_take_the_next_word() {
        // -extldflags takes "-X=…" as its value: it is not an -X of the linker's.
        assert_eq!(
            read("-extldflags -X=runtime.godebugDefault=madvdontneed=0"),
            Override::None
        );
        assert_eq!(
            read("-extldflags=-static -X=runtime.godebugDefault=madvdontneed=0"),
            set("madvdontneed=0")
        );
        // Boolean flags never do.
        assert_eq!(
            read("-s -w -race -linkshared -X=runtime.godebugDefault=madvdontneed=0"),
            set("madvdontneed=0")
        );
        assert_eq!(
            read("-buildid abc -X=runtime.godebugDefault=madvdontneed=0"),
            set("madvdontneed=0")
        );
        // Parsing stops at a word that is not a flag, and after "--".
        assert_eq!(
            read("-s -- -X=runtime.godebugDefault=madvdontneed=0"),
            Override::None
        );
        assert_eq!(
            read("-s main.a -X=runtime.godebugDefault=madvdontneed=0"),
            Override::None
        );
    }

    #[test]
    fn patterns_and_response_files() {
        let x = "-X=runtime.godebugDefault=madvdontneed=0";
        assert_eq!(read(&format!("all={x}")), set("madvdontneed=0"));
        assert_eq!(
            read(&format!(" example.com/svc ={x}")),
            set("madvdontneed=0")
        );
        let elsewhere = Override::Unknown(
            "the recorded -ldflags name packages that may not include the main package, and \
             earlier -ldflags flags are not recorded",
        );
        assert_eq!(read(&format!("example.com/other={x}")), elsewhere);
        assert_eq!(read(&format!("./...={x}")), elsewhere);
        assert_eq!(
            godebug_default(&format!("example.com/svc={x}"), None),
            elsewhere
        );
        assert_eq!(
            read("-s @flags.txt"),
            Override::Unknown(
                "the recorded -ldflags read more flags from a file (@file) that is not recorded"
            )
        );
    }
}
