//! The top-level modules of `src/` depend on each other one way only: no
//! cycle. A module is `src/<name>.rs` or `src/<name>/` (`lib.rs` and
//! `main.rs` excluded); module A depends on module B when a non-comment line
//! of A names `crate::B`, in a `use` or inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module name -> the modules it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let files = modules.entry(name).or_default();
        if p.is_dir() {
            rust_files(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (m, files) in &modules {
        let mut deps = BTreeSet::new();
        for f in files {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                // Code before a trailing comment.
                let code = code.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let dep: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if dep != *m && names.contains(&dep) {
                        deps.insert(dep);
                    }
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// A cycle through `m`, if any (depth-first, with the path on the stack).
fn find_cycle(
    g: &BTreeMap<String, BTreeSet<String>>,
    m: &str,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = stack.iter().position(|s| s == m) {
        let mut c = stack[i..].to_vec();
        c.push(m.to_owned());
        return Some(c);
    }
    if done.contains(m) {
        return None;
    }
    stack.push(m.to_owned());
    for d in &g[m] {
        if let Some(c) = find_cycle(g, d, stack, done) {
            return Some(c);
        }
    }
    stack.pop();
    done.insert(m.to_owned());
    None
}

#[test]
fn no_cycle_between_top_level_modules() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = find_cycle(&g, m, &mut Vec::new(), &mut done) {
            let edges: Vec<String> = g
                .iter()
                .map(|(m, d)| format!("{m} -> {}", d.iter().cloned().collect::<Vec<_>>().join(" ")))
                .collect();
            panic!("module cycle: {}\n{}", c.join(" -> "), edges.join("\n"));
        }
    }
}

#[test]
fn the_checker_finds_a_cycle() {
    // The checker itself: a hand-made graph with a cycle is caught.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_owned()].into());
    g.insert("b".into(), ["c".to_owned()].into());
    g.insert("c".into(), ["a".to_owned()].into());
    let c = find_cycle(&g, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(c.unwrap(), ["a", "b", "c", "a"]);
}
