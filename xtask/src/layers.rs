//! The layers of memtrace's userspace, checked: each module imports only its own layer and
//! those below it (ARCHITECTURE.md). Run by `cargo xtask lint`.

use std::{fs, path::Path};

use anyhow::{Context as _, bail};

/// From the bottom up; a module may import its own layer and those before it.
const LAYERS: [&str; 5] = ["kernel", "model", "analysis", "output", "session"];
/// Shared vocabulary any layer may import.
const LEAVES: [&str; 3] = ["cli", "units", "stop"];

/// Fails, naming each offending import, when a module imports a layer above its own.
pub fn check(src: &Path) -> anyhow::Result<()> {
    let mut violations = Vec::new();
    for layer in LAYERS {
        visit(&src.join(layer), &mut |path, text| {
            for target in crate_imports(text) {
                if !allowed(layer, &target) {
                    violations.push(format!(
                        "{} ({layer}) imports crate::{target}",
                        path.strip_prefix(src).unwrap_or(path).display()
                    ));
                }
            }
        })?;
    }
    if !violations.is_empty() {
        bail!(
            "imports that point up a layer (see ARCHITECTURE.md):\n  {}",
            violations.join("\n  ")
        );
    }
    Ok(())
}

fn allowed(layer: &str, target: &str) -> bool {
    let rank = |name: &str| LAYERS.iter().position(|l| *l == name);
    LEAVES.contains(&target) || matches!((rank(layer), rank(target)), (Some(a), Some(b)) if b <= a)
}

fn visit(dir: &Path, each: &mut dyn FnMut(&Path, &str)) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            visit(&path, each)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            each(&path, &text);
        }
    }
    Ok(())
}

/// The first segment of every `crate::…` path, including each item of `crate::{a, b::c}`.
fn crate_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(top_level_items(group));
        } else {
            found.push(identifier(rest).to_owned());
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// The leading identifier of each comma-separated item of a `{…}` group, up to its `}`.
fn top_level_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                items.push(identifier(&group[i..]).to_owned());
                item_start = false;
            }
            _ => {}
        }
    }
    items
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_grouped_and_plain_imports() {
        let text = "use crate::{\n    kernel::LostCounts,\n    model::{Model, event::Event},\n};\n\
                    let x = crate::units::human_bytes(1);";
        assert_eq!(crate_imports(text), ["kernel", "model", "units"]);
        assert!(allowed("output", "model") && allowed("kernel", "stop"));
        assert!(!allowed("kernel", "model") && !allowed("analysis", "output"));
    }

    #[test]
    fn memtrace_layers_point_down() {
        check(&crate::tasks::workspace_root().join("memtrace/src")).unwrap();
    }
}
