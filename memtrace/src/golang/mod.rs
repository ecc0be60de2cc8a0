//! Go binaries: which Go built them and with which settings (the runtime's madvise mode
//! depends on both).

pub mod buildinfo;
