//! The shape of the `hadss` crate, checked from its source: no two files of `src/` depend on
//! each other, directly or through others (a dependency is any `crate::…` or `super::…`
//! path in code outside `#[cfg(test)]` modules, resolved to the file of the longest module
//! it names), and no process-global state (`static` items, `thread_local!`) outside tests:
//! time and faults are handed to a node at construction.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, by module path (`crate`, `crate::node`, `crate::node::chunks`).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            modules(&path, &format!("{prefix}::{name}"), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = match name.as_str() {
                "lib" | "main" if prefix == "crate" => {
                    if name == "main" {
                        continue; // the binary is its own crate
                    }
                    prefix.to_string()
                }
                "mod" => prefix.to_string(),
                _ => format!("{prefix}::{name}"),
            };
            out.insert(module, path);
        }
    }
}

/// The code of a file without comments and without its test modules.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths a file's code names: `crate::a::b` and `super::c` (made absolute), with
/// `use` groups (`crate::a::{b, c::d}`) expanded one level.
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    // `super` in `x/mod.rs` (module x) and in `x.rs` (module x) both mean x's parent.
    let mut parent: Vec<String> = module.split("::").map(str::to_string).collect();
    parent.pop();
    let mut out = Vec::new();
    // Relative `use` of a child module (`pub use chunks::X;`, `use self::x::Y;`), as
    // `mod.rs` re-exports are written: made absolute under this module.
    for line in code.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("pub use ").or_else(|| t.strip_prefix("use ")) else {
            continue;
        };
        let rest = rest.strip_prefix("self::").unwrap_or(rest);
        let first: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !first.is_empty() && !["crate", "super", "std", "core", "alloc"].contains(&first.as_str()) {
            let mut path: Vec<String> = module.split("::").map(str::to_string).collect();
            path.push(first);
            out.push(path);
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            from = i + start.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            // `pub(in crate::x)` is a visibility, not a dependency.
            if code[..i].ends_with("(in ") {
                continue;
            }
            let mut end = from;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            let mut base: Vec<String> = if start == "crate::" {
                vec!["crate".into()]
            } else {
                parent.clone()
            };
            base.extend(
                code[from..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            if end < bytes.len() && bytes[end] == b'{' {
                let close = code[end..].find('}').map_or(end, |c| end + c);
                for item in code[end + 1..close].split(',') {
                    let mut path = base.clone();
                    path.extend(item.trim().split("::").filter(|s| !s.is_empty()).map(str::to_string));
                    out.push(path);
                }
            } else {
                out.push(base);
            }
        }
    }
    out
}

/// The file-level dependency graph of `src/` (the library crate).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&src, "crate", &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let code = code(path);
        let targets = edges.entry(module.clone()).or_default();
        for named in named_paths(module, &code) {
            // The longest prefix that is a module with a file.
            let target = (1..=named.len())
                .rev()
                .map(|n| named[..n].join("::"))
                .find(|m| files.contains_key(m));
            if let Some(t) = target
                && t != *module
                && t != "crate"
            {
                targets.insert(t);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    edges.entry("c".into()).or_default().insert("a".into());
    edges.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    edges.get_mut("c").unwrap().clear();
    assert!(cycles(&edges).is_empty());
    let parsed = named_paths(
        "crate::node::chunks",
        "use super::{quorum::X, runtime::Inner};\nlet x = crate::object::layout::KEY;",
    );
    assert!(parsed.contains(&vec!["crate".into(), "node".into(), "quorum".into(), "X".into()]));
    assert!(parsed.contains(&vec!["crate".into(), "object".into(), "layout".into(), "KEY".into()]));
}

#[test]
fn no_two_source_files_depend_on_each_other() {
    let edges = graph();
    assert!(edges.len() > 40, "the graph covers the crate ({} files)", edges.len());
    assert!(
        edges["crate::object::store"].contains("crate::node"),
        "the object layer sits on the node runtime"
    );
    assert!(
        edges["crate::gateway::s3::put"].contains("crate::object"),
        "the S3 glue sits on the object layer"
    );
    let found = cycles(&edges);
    assert!(found.is_empty(), "import cycles between source files: {found:#?}");
}

#[test]
fn no_process_global_state_outside_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&src, "crate", &mut files);
    let mut found = Vec::new();
    for path in files.values() {
        for (n, line) in code(path).lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("static ") || t.starts_with("pub static ") || t.contains("thread_local!") {
                found.push(format!("{}:{}: {t}", path.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "process-global state: {found:#?}");
}
