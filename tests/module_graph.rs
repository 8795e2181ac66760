//! The top-level modules of `src/` depend on each other one way only: no
//! cycle. A module is `src/<name>.rs` or `src/<name>/` (`lib.rs` and
//! `main.rs` excluded); module A depends on module B when the code of A (not
//! its comments nor its string or char literals) names `crate::B`: in a
//! `use`, inline (`crate::B::f()`), or as a name directly inside a grouped
//! import (`use crate::{B, C::{x, y}};`, on one line or several).
//! `super::` and `self::` paths are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name -> the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

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

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `text` with its comments (`//`, `///`, `//!`, nested `/* */`), string
/// literals (plain, byte, C and raw) and char literals each replaced by one
/// space: only code is left.
fn strip(text: &str) -> String {
    let s: Vec<char> = text.chars().collect();
    let at = |i: usize| s.get(i).copied();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let starts_word = i == 0 || !is_ident(s[i - 1]);
        if c == '/' && at(i + 1) == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
            out.push(' ');
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0usize;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(end) = starts_word.then(|| raw_string_end(&s, i)).flatten() {
            i = end;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && at(i + 1) == Some('\\') {
            // An escaped char literal: '\n', '\'', '\u{1F600}'.
            i += 3;
            while i < s.len() && s[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && at(i + 2) == Some('\'') {
            // A char literal, '"' included ('a is a lifetime: kept).
            i += 3;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string literal (`r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#`) starts at
/// `s[i]`, the index just past it.
fn raw_string_end(s: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(s.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if s.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = s[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if s.get(j) != Some(&'"') {
        return None; // `r#ident`, or just a name starting with r
    }
    j += 1;
    while j < s.len() {
        if s[j] == '"' && s[j + 1..].iter().take_while(|&&c| c == '#').count() >= hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(s.len())
}

fn skip_ws(s: &[char], i: &mut usize) {
    while *i < s.len() && s[*i].is_whitespace() {
        *i += 1;
    }
}

/// The identifier at `s[*i]` (empty if none), moving past it.
fn word(s: &[char], i: &mut usize) -> String {
    let start = *i;
    if s.get(start).is_some_and(|c| c.is_ascii_digit()) {
        return String::new();
    }
    while *i < s.len() && is_ident(s[*i]) {
        *i += 1;
    }
    s[start..*i].iter().collect()
}

/// The group whose `{` is at `s[*i]`: adds the first name of each of its
/// items (`a` of `a::{x, y}`, `b` of `b::Z`, `c` of `c as d`; not `self`,
/// not `*`), items of an unprefixed inner group (`{{a, b}}`) included, and
/// moves past its `}`.
fn group(s: &[char], i: &mut usize, out: &mut BTreeSet<String>) {
    *i += 1;
    loop {
        skip_ws(s, i);
        match s.get(*i) {
            None => return,
            Some('}') => {
                *i += 1;
                return;
            }
            Some(',') => *i += 1,
            Some('{') => group(s, i, out),
            Some(_) => {
                let name = word(s, i);
                if !name.is_empty() && name != "self" {
                    out.insert(name);
                }
                // The rest of the item, nested groups included, up to the
                // `,` or `}` that ends it.
                let mut depth = 0usize;
                while let Some(&c) = s.get(*i) {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => break,
                        _ => {}
                    }
                    *i += 1;
                }
            }
        }
    }
}

/// The names `text` reaches through `crate::`: `x` of `crate::x::y(..)` and
/// of `use crate::x;`, and each name directly inside `crate::{ ... }`.
/// Comments and literals do not count.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let s: Vec<char> = strip(text).chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        if !is_ident(s[i]) {
            i += 1;
            continue;
        }
        // A whole word (identifier, keyword or number).
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        if s[start..i].iter().collect::<String>() != "crate" {
            continue;
        }
        let mut j = i;
        skip_ws(&s, &mut j);
        if !(s.get(j) == Some(&':') && s.get(j + 1) == Some(&':')) {
            continue; // `pub(crate)`, `extern crate`
        }
        j += 2;
        skip_ws(&s, &mut j);
        if s.get(j) == Some(&'{') {
            group(&s, &mut j, &mut out);
        } else {
            let name = word(&s, &mut j);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        i = j;
    }
    out
}

/// Module name -> the text of each of its files.
fn sources(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut modules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        } else {
            continue;
        }
        let texts = modules.entry(name).or_default();
        texts.extend(files.iter().map(|f| std::fs::read_to_string(f).unwrap()));
    }
    modules
}

/// The dependency graph of modules given as their files' texts.
fn graph(modules: &BTreeMap<String, Vec<String>>) -> Graph {
    modules
        .iter()
        .map(|(m, texts)| {
            let deps = texts
                .iter()
                .flat_map(|t| crate_refs(t))
                .filter(|d| d != m && modules.contains_key(d))
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

/// A cycle through `m`, if any (depth-first, with the path on the stack).
fn find_cycle(
    g: &Graph,
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

/// A cycle anywhere in `g`, if any.
fn any_cycle(g: &Graph) -> Option<Vec<String>> {
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| find_cycle(g, m, &mut Vec::new(), &mut done))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[test]
fn no_cycle_between_top_level_modules() {
    let g = graph(&sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    assert!(
        g.values().map(BTreeSet::len).sum::<usize>() > 10,
        "too few dependencies found: {g:?}"
    );
    if let Some(c) = any_cycle(&g) {
        let edges: Vec<String> = g
            .iter()
            .map(|(m, d)| format!("{m} -> {}", d.iter().cloned().collect::<Vec<_>>().join(" ")))
            .collect();
        panic!("module cycle: {}\n{}", c.join(" -> "), edges.join("\n"));
    }
}

#[test]
fn the_parser_sees_every_form_of_crate_path() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("plain use", "use crate::alpha::Thing;", &["alpha"]),
        (
            "grouped, one line",
            "use crate::{alpha, beta};",
            &["alpha", "beta"],
        ),
        (
            "grouped, several lines",
            "use crate::{\n    alpha,\n    beta::Thing,\n    gamma as g,\n};\n",
            &["alpha", "beta", "gamma"],
        ),
        (
            "split before the group",
            "use crate\n    ::\n    {alpha, beta};",
            &["alpha", "beta"],
        ),
        (
            "nested groups",
            "use crate::{a::{x, y::{p, q}}, b::Z, c::{self, d::{e}}};",
            &["a", "b", "c"],
        ),
        (
            "inner unprefixed group",
            "use crate::{{a, b}, c};",
            &["a", "b", "c"],
        ),
        (
            "self and glob in a group",
            "use crate::{self, a, *};",
            &["a"],
        ),
        (
            "inline path",
            "fn f() -> u8 { let v = crate::x::y(0x1f, crate::w::K); crate :: z::g(v) }",
            &["w", "x", "z"],
        ),
        (
            "macro $crate",
            "macro_rules! m { () => { $crate::x::f() } }",
            &["x"],
        ),
        (
            "commented-out line",
            "// use crate::gone;\nuse crate::kept;",
            &["kept"],
        ),
        (
            "doc comments",
            "/// see crate::gone\n//! and crate::{gone2}\nfn f() {}",
            &[],
        ),
        (
            "trailing comment",
            "use crate::kept; // was crate::gone",
            &["kept"],
        ),
        (
            "block comments, nested",
            "/* crate::a /* crate::b */ crate::c */ use crate::{\n    kept, /* gone, */\n    // gone2,\n};",
            &["kept"],
        ),
        (
            "string literals",
            r####"let a = "crate::gone \" crate::gone2"; let b = r#"crate::gone3 " crate::gone4"#; let c = b"crate::gone5"; crate::kept();"####,
            &["kept"],
        ),
        (
            "char literals and lifetimes",
            "let q = '\"'; let e = '\\''; fn f<'a>(x: &'a str) { crate::kept::g(x) }",
            &["kept"],
        ),
        (
            "super and self",
            "use super::z;\nuse self::w;\nsuper::super::v::f();",
            &[],
        ),
        (
            "not a crate path",
            "pub(crate) fn f() {}\nextern crate alloc;\nlet crate_x = my_crate::a;",
            &[],
        ),
    ];
    for (what, text, want) in cases {
        assert_eq!(crate_refs(text), set(want), "{what}: {text:?}");
    }
}

#[test]
fn a_cycle_through_grouped_imports_is_found() {
    // a -> b through a one-line group, b -> c through a multi-line nested
    // one, c -> a inline: a cycle the checker must see.
    let a = "use crate::{b, d::Thing};\nuse super::c; // not a dependency\n";
    let b = "use crate::{\n    c::{x, y},\n    d,\n};\n";
    let c = "pub fn f() { crate::a::g(); }\n";
    let d = "// use crate::a;\nconst S: &str = \"crate::a\";\n";
    let modules: BTreeMap<String, Vec<String>> = [("a", a), ("b", b), ("c", c), ("d", d)]
        .into_iter()
        .map(|(m, t)| (m.to_owned(), vec![t.to_owned()]))
        .collect();
    let g = graph(&modules);
    let want: Graph = [
        ("a", set(&["b", "d"])),
        ("b", set(&["c", "d"])),
        ("c", set(&["a"])),
        ("d", set(&[])),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_owned(), d))
    .collect();
    assert_eq!(g, want);
    assert_eq!(any_cycle(&g).unwrap(), ["a", "b", "c", "a"]);

    // Without the inline back edge there is no cycle.
    let mut modules = modules;
    modules.insert("c".into(), vec!["pub fn f() { super::a::g(); }\n".into()]);
    assert_eq!(any_cycle(&graph(&modules)), None);
}

#[test]
fn the_checker_finds_a_cycle() {
    // The checker itself: a hand-made graph with a cycle is caught.
    let mut g: Graph = BTreeMap::new();
    g.insert("a".into(), set(&["b"]));
    g.insert("b".into(), set(&["c"]));
    g.insert("c".into(), set(&["a"]));
    let c = find_cycle(&g, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(c.unwrap(), ["a", "b", "c", "a"]);
    // Reached from outside the cycle, too.
    g.insert("z".into(), set(&["b"]));
    assert!(any_cycle(&g).is_some());
    // And a graph without one (a diamond) passes.
    g.insert("c".into(), set(&[]));
    g.insert("a".into(), set(&["b", "c"]));
    g.insert("b".into(), set(&["c"]));
    assert_eq!(any_cycle(&g), None);
}
