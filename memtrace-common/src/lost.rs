//! Why the kernel side dropped a record: the index into the per-CPU `LOST` counters.

named_enum! {
    /// A reason the kernel programs could not deliver or count something.
    pub enum Lost {
        /// The events ring buffer was full.
        RingFull = 0 => "ring_full",
        /// The syscall pairing table had no free slot, so an entry could not be parked.
        PendingFull = 1 => "pending_full",
        /// The fault table was full: a new process's faults could not be counted.
        FaultTableFull = 2 => "fault_table_full",
        /// A forked child's pid lay beyond the filter (`kernel.pid_max` was raised after
        /// memtrace started): it could not be followed.
        TargetsFull = 3 => "targets_full",
        /// The reclaim pairing table was full: a stall's begin could not be parked.
        ReclaimPendingFull = 4 => "reclaim_pending_full",
        /// The address-space table was full: a process's RSS and what reclaim took from it
        /// could not be followed.
        RssTableFull = 5 => "rss_table_full",
        /// A syscall's arguments were not where this kernel keeps the caller's saved registers
        /// (they held another syscall's number): the call could not be counted.
        ArgsUnread = 6 => "args_unread",
    }
}

impl Lost {
    /// What was lost, in a few words, for people.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::RingFull => "ring buffer full",
            Self::PendingFull => "pairing table full",
            Self::FaultTableFull => "fault table full",
            Self::TargetsFull => "child pid beyond the filter (pid_max raised)",
            Self::ReclaimPendingFull => "reclaim pairing table full",
            Self::RssTableFull => "address-space table full",
            Self::ArgsUnread => "syscall arguments not found in the saved registers",
        }
    }

    /// What the user can do about it, if anything.
    pub const fn remedy(self) -> Option<&'static str> {
        match self {
            Self::RingFull => Some("retry with a larger --ring-size"),
            Self::PendingFull
            | Self::FaultTableFull
            | Self::TargetsFull
            | Self::ReclaimPendingFull
            | Self::RssTableFull => None,
            Self::ArgsUnread => Some("please report it with `uname -r`"),
        }
    }
}
