//! The kernel programs' object file, built by build.rs from memtrace-ebpf.

/// The object file, aligned for aya.
pub static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// The tables in memtrace-common name the object's programs, globals and maps by string: these
/// tests fail when a name matches nothing in the object, or the object has a program no table
/// names.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use memtrace_common::{
        config,
        hooks::{End, Program, Trampoline},
        maps,
    };
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::PROGRAMS;

    /// `(symbol, section)` of every named symbol in the object.
    fn symbols() -> Vec<(String, String)> {
        let file = object::File::parse(PROGRAMS).expect("the embedded object is ELF");
        file.symbols()
            .filter(|s| s.kind() != SymbolKind::Section && s.kind() != SymbolKind::File)
            .filter_map(|s| {
                let section = file.section_by_index(s.section_index()?).ok()?;
                Some((s.name().ok()?.to_owned(), section.name().ok()?.to_owned()))
            })
            .collect()
    }

    fn in_sections(prefix: &str) -> BTreeSet<String> {
        symbols()
            .into_iter()
            .filter(|(_, section)| section.starts_with(prefix))
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn every_program_is_in_the_hook_table_and_back() {
        let in_object = in_sections("tracepoint");
        let in_table: BTreeSet<String> = Program::ALL.iter().map(|p| p.name().to_owned()).collect();
        assert!(
            !in_object.is_empty(),
            "no tracepoint programs in the object"
        );
        assert_eq!(
            in_object, in_table,
            "programs in the object vs memtrace_common::hooks::Program"
        );
    }

    /// Each trampoline program sits in the section of its end, naming its function there too
    /// (`fentry/__x64_sys_madvise`), and the object has no other.
    #[test]
    fn every_trampoline_is_in_its_table_and_back() {
        let mut in_object: BTreeSet<(String, String)> = symbols()
            .into_iter()
            .filter(|(_, section)| section.starts_with("fentry/") || section.starts_with("fexit/"))
            .collect();
        for trampoline in Trampoline::ALL {
            let end = match trampoline.end() {
                End::Entry => "fentry",
                End::Exit => "fexit",
            };
            let expected = (
                trampoline.name().to_owned(),
                format!("{end}/{}", trampoline.function()),
            );
            assert!(
                in_object.remove(&expected),
                "{expected:?} missing from the object"
            );
        }
        assert!(in_object.is_empty(), "not in the table: {in_object:?}");
    }

    #[test]
    fn every_named_global_and_map_exists() {
        let names: BTreeSet<String> = symbols().into_iter().map(|(name, _)| name).collect();
        for global in config::GLOBALS.iter().chain(&[aya_log::LEVEL]) {
            assert!(
                names.contains(*global),
                "global {global} missing from the object"
            );
        }
        let map_section = in_sections("maps");
        for map in maps::ALL {
            assert!(
                map_section.contains(map),
                "map {map} missing from the object"
            );
        }
    }
}
