//! The README and the docs stand alone, and their examples paste and run:
//!
//! - no file of the repository points to a document that is not in it;
//! - every relative link of the README and `docs/` resolves (file and anchor);
//! - every Rust example of the README is a whole program (compiled by the
//!   doc-tests, `src/lib.rs`) preceded by a `[dependencies]` list naming
//!   every crate it uses, with the tokio features it needs;
//! - every shell command of the README has its arguments quoted: a `|` is a
//!   pipeline, never part of an argument.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The repository's text files: sources, docs, manifests, scripts (build
/// output and hidden directories other than `.ci` left out).
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if e.file_type().unwrap().is_dir() {
            let skip = name == "target"
                || (name.starts_with('.') && name != ".ci")
                || (dir.ends_with("fuzz") && (name == "corpus" || name == "artifacts"));
            if !skip {
                text_files(&path, out);
            }
        } else {
            let text = [
                ".md", ".rs", ".toml", ".sh", ".html", ".yml", ".yaml", ".txt",
            ]
            .iter()
            .any(|x| name.ends_with(x))
                || dir.file_name().is_some_and(|d| d == ".ci");
            if text {
                out.push(path);
            }
        }
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    // Spelled in pieces so that this file does not match itself.
    let outside = [
        concat!("DESIGN", ".md"),
        concat!("API", ".md"),
        concat!("shared", "/reference"),
        concat!("../", "shared"),
        concat!("yao-trace", "-spec"),
    ];
    let mut files = Vec::new();
    text_files(&root(), &mut files);
    assert!(files.len() > 50, "walked too few files: {files:?}");
    let mut found = Vec::new();
    for f in &files {
        for (i, line) in read(f).lines().enumerate() {
            for o in outside {
                if line.contains(o) {
                    found.push(format!(
                        "{}:{}: {o}",
                        f.strip_prefix(root()).unwrap().display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "pointers to documents that are not in the repository:\n{}",
        found.join("\n")
    );
    assert!(root().join("docs/REFERENCE.md").is_file());
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, other
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_fence = false;
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target)` of every `[text](target)` outside code.
fn links(markdown: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn relative_links_resolve() {
    let mut docs = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            docs.push(p);
        }
    }
    let mut broken = Vec::new();
    let (mut files_checked, mut anchors_checked) = (0, 0);
    for doc in &docs {
        let text = read(doc);
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            files_checked += usize::from(!file.is_empty());
            anchors_checked += usize::from(!anchor.is_empty());
            let target = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}", doc.display()));
            } else if !anchor.is_empty() && !anchors(&read(&target)).contains(anchor) {
                broken.push(format!("{}: {link} (no such heading)", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // Not vacuous: the docs do link to files and to headings.
    assert!(
        files_checked >= 5 && anchors_checked >= 5,
        "checked only {files_checked} file links and {anchors_checked} anchors"
    );
}

/// A fenced block of the README: its info string, text and first line.
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(b) => out.push(b),
                None => {
                    open = Some(Block {
                        info: info.trim().to_owned(),
                        text: String::new(),
                        line: i + 1,
                    })
                }
            }
        } else if let Some(b) = open.as_mut() {
            b.text.push_str(line);
            b.text.push('\n');
        }
    }
    out
}

/// Crate names and tokio features of a `[dependencies]` block.
fn dependencies(toml: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut crates = BTreeSet::new();
    let mut tokio = BTreeSet::new();
    for line in toml.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim().replace('-', "_");
        if name == "tokio"
            && let Some(f) = value.split("features").nth(1)
        {
            for feat in f.split('"').skip(1).step_by(2) {
                tokio.insert(feat.to_owned());
            }
        }
        crates.insert(name);
    }
    (crates, tokio)
}

/// The external crates a Rust example names (first segment of each path).
fn crates_used(code: &str) -> BTreeSet<String> {
    let local = ["std", "core", "alloc", "crate", "self", "super"];
    let mut imported = BTreeSet::new();
    let mut used = BTreeSet::new();
    for stmt in code.split(';') {
        let s = stmt.trim();
        if let Some(path) = s.strip_prefix("use ") {
            let first: String = path
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(first);
            // Names a `use` brings in may start later paths.
            for name in path.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                imported.insert(name.to_owned());
            }
        }
    }
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i].is_ascii_lowercase() || bytes[i] == '_')
            && (i == 0 || !(bytes[i - 1].is_alphanumeric() || matches!(bytes[i - 1], '_' | ':')));
        if starts {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                j += 1;
            }
            if code_at(&bytes, j, "::") {
                let name: String = bytes[i..j].iter().collect();
                if !imported.contains(&name) {
                    used.insert(name);
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    used.retain(|c| !c.is_empty() && !local.contains(&c.as_str()));
    used
}

fn code_at(chars: &[char], at: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

/// The text of every `examples/*.rs`.
fn example_sources() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root().join("examples")) else {
        return Vec::new();
    };
    dir.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| read(&p))
        .collect()
}

#[test]
fn readme_rust_examples_are_whole_programs_with_their_dependencies() {
    let readme = read(&root().join("README.md"));
    let mut deps: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
    let mut examples = 0;
    for b in blocks(&readme) {
        if b.info == "toml" && b.text.contains("[dependencies]") {
            deps = Some(dependencies(&b.text));
            continue;
        }
        if !b.info.starts_with("rust") {
            continue;
        }
        examples += 1;
        let at = format!("README.md:{}", b.line);
        if b.info.contains("ignore") {
            // Allowed only as a verbatim copy of a program of `examples/`,
            // which is compiled with the features it needs.
            assert!(
                example_sources().contains(&b.text),
                "{at}: an ignored example is never compiled (unless it is a \
                 verbatim copy of a file of examples/)"
            );
        }
        assert!(b.text.contains("fn main"), "{at}: not a whole program");
        let Some((crates, tokio)) = deps.take() else {
            panic!("{at}: no [dependencies] list before this example");
        };
        for c in crates_used(&b.text) {
            assert!(
                crates.contains(&c),
                "{at}: uses `{c}`, which its [dependencies] do not list ({crates:?})"
            );
        }
        let mut needs = Vec::new();
        if b.text.contains("#[tokio::main]") {
            needs.extend(["macros", "rt-multi-thread"]);
        }
        for (module, feature) in [
            ("tokio::net", "net"),
            ("tokio::time", "time"),
            ("tokio::fs", "fs"),
            ("tokio::signal", "signal"),
            ("tokio::sync", "sync"),
        ] {
            if b.text.contains(module) {
                needs.push(feature);
            }
        }
        for f in needs {
            assert!(
                tokio.contains(f),
                "{at}: needs tokio feature {f:?}, its [dependencies] have {tokio:?}"
            );
        }
    }
    assert!(examples >= 3, "found {examples} Rust examples");
}

/// Unquoted `|` characters of a shell command that are not a pipeline
/// (`a | b`, with spaces); `#` comments are left out.
fn stray_pipes(command: &str) -> Vec<usize> {
    let chars: Vec<char> = command.chars().collect();
    let mut quote = None;
    let mut bad = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || chars[i - 1].is_whitespace() => break,
            (None, '|') => {
                let spaced = i > 0
                    && chars[i - 1] == ' '
                    && chars.get(i + 1).is_some_and(|n| *n == ' ' || *n == '|');
                let second_of_pair = i > 0 && chars[i - 1] == '|';
                if !spaced && !second_of_pair {
                    bad.push(i);
                }
            }
            _ => {}
        }
    }
    bad
}

#[test]
fn readme_shell_commands_quote_their_arguments() {
    assert_eq!(stray_pipes("tool --engine a|b"), vec![15]);
    assert!(stray_pipes("tool --engine 'a|b' | head -1").is_empty());
    assert!(stray_pipes("tool   # a|b in a comment").is_empty());

    let readme = read(&root().join("README.md"));
    let mut commands: Vec<(usize, String)> = Vec::new();
    let mut in_sh = false;
    let mut in_fence = false;
    for (i, line) in readme.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            in_fence = !in_fence;
            in_sh = in_fence && matches!(info.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if in_sh {
            commands.push((i + 1, line.to_owned()));
        } else if !in_fence {
            // Inline commands: `cargo ...` and `tracepool ...` code spans.
            for (k, span) in line.split('`').enumerate() {
                if k % 2 == 1 && (span.starts_with("cargo ") || span.starts_with("tracepool ")) {
                    commands.push((i + 1, span.to_owned()));
                }
            }
        }
    }
    assert!(commands.len() >= 5, "{commands:?}");
    let bad: Vec<String> = commands
        .iter()
        .filter(|(_, c)| !stray_pipes(c).is_empty())
        .map(|(n, c)| format!("README.md:{n}: {c}"))
        .collect();
    assert!(
        bad.is_empty(),
        "shell arguments with an unquoted `|` (read as a pipe):\n{}",
        bad.join("\n")
    );
}
