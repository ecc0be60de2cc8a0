//! Why tracing stopped: one set of reasons for every mode.

use schemars::JsonSchema;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `--duration` (or `memtrace go --wait`) ran out.
    Duration,
    /// Every traced process exited.
    TargetExited,
    /// stdout went away; the report went to stderr.
    OutputClosed,
    /// `memtrace go`: the release burst it waited for was seen.
    ReleaseSeen,
}

impl StopReason {
    /// In a few words, for the report's first line.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Interrupted => "interrupted",
            Self::Duration => "duration reached",
            Self::TargetExited => "traced process exited",
            Self::OutputClosed => "output closed",
            Self::ReleaseSeen => "releases seen",
        }
    }
}
