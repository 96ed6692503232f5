//! The client's module layout (issue 8): the files of `src/` import each other without a
//! circle, and only `kernel/` names fuser. Reads the source, so a new circle or a fuser
//! import elsewhere fails here with the path that closes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module by its path below `src/` (`["data", "read"]`; `[]` is the crate root).
type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read src dir");
    for e in entries {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("below src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` (tests may
/// reach anything).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` and `super::a…` path in `code`, as segments from the crate root.
fn paths(module: &Module, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(ident) {
                continue;
            }
            let mut segs = base.clone();
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b}`: the first segment of each item.
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first: String = item.trim().chars().take_while(|c| ident(*c)).collect();
                    if !first.is_empty() {
                        let mut s = segs.clone();
                        s.push(first);
                        out.push(s);
                    }
                }
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| ident(*c) || *c == ':')
                .collect();
            segs.extend(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            out.push(segs);
        }
    }
    out
}

/// The longest prefix of `segs` that is a module file.
fn resolve(modules: &BTreeSet<Module>, segs: &[String]) -> Option<Module> {
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn graph() -> (BTreeMap<Module, BTreeSet<Module>>, BTreeMap<Module, String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let texts: BTreeMap<Module, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (module_of(&src, f), code(&text))
        })
        .collect();
    let modules: BTreeSet<Module> = texts.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (m, text) in &texts {
        let to: BTreeSet<Module> = paths(m, text)
            .iter()
            .filter_map(|p| resolve(&modules, p))
            .filter(|t| t != m && !t.is_empty())
            .collect();
        edges.insert(m.clone(), to);
    }
    (edges, texts)
}

fn find_circle(
    edges: &BTreeMap<Module, BTreeSet<Module>>,
    at: &Module,
    stack: &mut Vec<Module>,
    done: &mut BTreeSet<Module>,
) -> Option<Vec<Module>> {
    if let Some(i) = stack.iter().position(|m| m == at) {
        let mut c = stack[i..].to_vec();
        c.push(at.clone());
        return Some(c);
    }
    if done.contains(at) {
        return None;
    }
    stack.push(at.clone());
    for next in edges.get(at).into_iter().flatten() {
        if let Some(c) = find_circle(edges, next, stack, done) {
            return Some(c);
        }
    }
    stack.pop();
    done.insert(at.clone());
    None
}

#[test]
fn client_modules_import_each_other_without_a_circle() {
    let (edges, _) = graph();
    assert!(edges.len() > 20, "found the client's source files");
    let client = edges
        .get(&vec!["client".to_string()])
        .expect("client.rs exists");
    assert!(
        client.contains(&vec!["meta".to_string()]),
        "the parser sees client.rs import meta"
    );
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(c) = find_circle(&edges, m, &mut Vec::new(), &mut done) {
            let names: Vec<String> = c.iter().map(|m| m.join("/")).collect();
            panic!("import circle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn only_the_kernel_part_names_fuser() {
    let (_, texts) = graph();
    for (m, text) in texts {
        if m.first().is_some_and(|f| f == "kernel") {
            continue;
        }
        assert!(
            !text.contains("fuser::"),
            "{} names fuser; only kernel/ may",
            m.join("/")
        );
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let m = |s: &str| vec![s.to_string()];
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    let c = find_circle(&edges, &m("a"), &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(c, Some(vec![m("a"), m("b"), m("c"), m("a")]));
    let parsed = paths(
        &vec!["lease".into(), "session".into()],
        "use super::engine::X; use crate::{meta::Meta, data};",
    );
    assert!(parsed.contains(&vec!["lease".into(), "engine".into(), "X".into()]));
    assert!(parsed.contains(&vec!["meta".into()]));
    assert!(parsed.contains(&vec!["data".into()]));
}

/// The parts that own the client's state (held by the composition root) call only
/// downward: none of them names `client`, an operation (`ops/`), the lease runtime
/// (`lease/session`) or the flush procedure (`data/flush`), which are the code above them.
#[test]
fn the_parts_that_own_state_do_not_reach_up() {
    let (edges, _) = graph();
    let module = |s: &str| -> Module { s.split('/').map(str::to_string).collect() };
    let above = |m: &Module| {
        m.first().is_some_and(|f| f == "client" || f == "ops")
            || *m == module("lease/session")
            || *m == module("data/flush")
    };
    for part in [
        "data/writeback",
        "data/attrs",
        "data/write_errors",
        "data/open_files",
        "data/open_dirs",
        "data/dir_parents",
        "data/no_caps",
        "lease/session_state",
        "meta",
        "handle",
        "horizon",
        "verifier",
    ] {
        let to = edges
            .get(&module(part))
            .unwrap_or_else(|| panic!("{part}.rs exists"));
        if let Some(up) = to.iter().find(|t| above(t)) {
            panic!("{part} imports {}, which is above it", up.join("/"));
        }
    }
}
