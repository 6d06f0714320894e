//! House rules checked as tests: layers only use the layers below them, every module says
//! what it is for, and no stub is left in the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each layer (a folder or file under `src/`) and the crate modules it may use. `ews` and
/// `secret` are the `taskbridge-ews` crate, re-exported under those names.
const LAYERS: &[(&str, &[&str])] = &[
    ("sqlite", &[]),
    ("postgres", &[]),
    ("pm", &["secret", "server", "sqlite", "postgres"]),
    ("mapping", &["ews", "pm"]),
    (
        "state",
        &["ews", "secret", "pm", "mapping", "sqlite", "postgres"],
    ),
    ("sync", &["pm", "mapping", "state"]),
    ("exchange", &["ews", "pm", "mapping", "state", "sync"]),
    ("listener", &["ews", "secret", "server"]),
    (
        "console",
        &[
            "ews", "pm", "mapping", "state", "sync", "listener", "server",
        ],
    ),
    (
        "connector",
        &[
            "ews", "pm", "mapping", "state", "sync", "exchange", "listener", "secret",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source folders of every crate of the workspace.
fn all_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for krate in ["ews", "sim"] {
        rust_files(&root.join("crates").join(krate).join("src"), &mut files);
    }
    files
}

/// A file's code with comments left out, its lines joined: a `use` group that rustfmt wraps
/// over several lines is then read like one on a single line.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Reads the path or use tree at the start of `rest` (`a::b`, `a::{b, c::{d, e as f}}`),
/// below `path`, adding each path it names to `found`; returns what follows it.
fn use_tree<'a>(mut path: Vec<String>, mut rest: &'a str, found: &mut Vec<Vec<String>>) -> &'a str {
    loop {
        rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut inner = group;
            loop {
                inner = inner.trim_start();
                if let Some(after) = inner.strip_prefix('}') {
                    return after;
                }
                let name = ident(inner);
                if name.is_empty() {
                    // `*`, `,` or the end of the text.
                    match inner.chars().next() {
                        Some(c) => inner = &inner[c.len_utf8()..],
                        None => return inner,
                    }
                    continue;
                }
                if name == "self" {
                    found.push(path.clone());
                    inner = &inner[name.len()..];
                } else {
                    inner = use_tree(path.clone(), inner, found);
                }
                // A rename names nothing more.
                if let Some(renamed) = inner.trim_start().strip_prefix("as ") {
                    let renamed = renamed.trim_start();
                    inner = &renamed[ident(renamed).len()..];
                }
            }
        }
        let name = ident(rest);
        if name.is_empty() {
            found.push(path);
            return rest;
        }
        rest = &rest[name.len()..];
        path.push(name.to_string());
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                found.push(path);
                return rest;
            }
        }
    }
}

/// Where `prefix` starts a path in `code`: not inside another identifier (`$crate::` counts)
/// nor further on in a path (the second `super::` of `super::super::`).
fn path_starts<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(prefix)
        .map(|(at, _)| at)
        .filter(move |&at| {
            let before = &code[..at];
            !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && !before.ends_with("::")
        })
}

/// The crate modules a file names in code (comments left out).
fn uses(text: &str) -> Vec<String> {
    let code = code_of(text);
    let mut paths = Vec::new();
    for at in path_starts(&code, "crate::") {
        use_tree(Vec::new(), &code[at + "crate::".len()..], &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|p| p.into_iter().next())
        .collect()
}

#[test]
fn tidy_layers_use_only_layers_below_them() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src()).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        let Some(may) = allowed.get(first.as_str()) else {
            continue; // lib.rs, main.rs, bin/, cli/: the wiring may use everything
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for used in uses(&text) {
            if used != first && !may.contains(&used.as_str()) {
                wrong.push(format!("{}: uses crate::{used}", rel.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn tidy_every_module_has_a_doc_comment() {
    let files = all_sources();
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            !text.lines().take(5).any(|l| l.starts_with("//!"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! doc:\n{}",
        missing.join("\n")
    );
}

#[test]
fn tidy_no_stubs_in_the_code() {
    let files = all_sources();
    let stubs: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.lines()
                .enumerate()
                .filter(|(_, l)| {
                    let code = l.split("//").next().unwrap_or_default();
                    code.contains(concat!("todo", "!("))
                        || code.contains(concat!("unimplemented", "!("))
                })
                .map(|(n, _)| format!("{}:{}", f.display(), n + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(stubs.is_empty(), "stubs:\n{}", stubs.join("\n"));
}

#[test]
fn tidy_the_library_does_not_compile_the_simulator() {
    // The simulator is for the `sim` and `demo` commands (src/cli, behind the `sim` feature)
    // and the tests; an embedder of the library must not build it.
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let wrong: Vec<String> = files
        .iter()
        .filter(|f| !f.strip_prefix(src()).is_ok_and(|r| r.starts_with("cli")))
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.lines().any(|l| {
                l.split("//")
                    .next()
                    .unwrap_or_default()
                    .contains("taskbridge_sim")
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "the library uses the simulator:\n{}",
        wrong.join("\n")
    );
}

/// A crate's source folder and the module path of each of its files.
fn module_files(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(src).expect("under src").with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            (path, f)
        })
        .collect()
}

/// The module paths a file names (`crate::a::b`, `super::c`, and `crate::a::{b, c::{d}}`
/// groups, wrapped over lines or not), resolved against the file's own module path, comments
/// left out.
fn named_paths(text: &str, own: &[String]) -> Vec<Vec<String>> {
    let code = code_of(text);
    let mut found = Vec::new();
    for at in path_starts(&code, "crate::") {
        use_tree(Vec::new(), &code[at + "crate::".len()..], &mut found);
    }
    for at in path_starts(&code, "super::") {
        // `super::` starts from the parent, each further `super::` from its parent.
        let mut parent = own.to_vec();
        parent.pop();
        let mut rest = &code[at + "super::".len()..];
        while let Some(r) = rest.strip_prefix("super::") {
            parent.pop();
            rest = r;
        }
        use_tree(parent, rest, &mut found);
    }
    found
}

/// The import cycles between sibling modules of one crate, each as `parent: a -> b -> a`.
fn import_cycles(src: &Path) -> Vec<String> {
    let files = module_files(src);
    let modules: std::collections::BTreeSet<Vec<String>> =
        files.iter().map(|(p, _)| p.clone()).collect();
    // parent module -> (child -> children it uses)
    let mut edges: BTreeMap<Vec<String>, BTreeMap<String, std::collections::BTreeSet<String>>> =
        BTreeMap::new();
    for (own, file) in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for named in named_paths(&text, own) {
            // The longest prefix of the named path that is a module.
            let target = (0..=named.len())
                .rev()
                .map(|n| named[..n].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            let common = own.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < own.len() && common < target.len() {
                edges
                    .entry(own[..common].to_vec())
                    .or_default()
                    .entry(own[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &edges {
        // A child is on a cycle when it can reach itself; report each strongly connected set once.
        let reach = |from: &str| -> std::collections::BTreeSet<String> {
            let mut seen = std::collections::BTreeSet::new();
            let mut todo = vec![from.to_string()];
            while let Some(n) = todo.pop() {
                for next in graph.get(&n).into_iter().flatten() {
                    if seen.insert(next.clone()) {
                        todo.push(next.clone());
                    }
                }
            }
            seen
        };
        let mut reported = std::collections::BTreeSet::new();
        for child in graph.keys() {
            if reported.contains(child) || !reach(child).contains(child) {
                continue;
            }
            let set: Vec<String> = graph
                .keys()
                .filter(|other| reach(child).contains(*other) && reach(other).contains(child))
                .cloned()
                .collect();
            reported.extend(set.iter().cloned());
            let at = if parent.is_empty() {
                "crate".to_string()
            } else {
                parent.join("::")
            };
            cycles.push(format!("{at}: {{{}}}", set.join(", ")));
        }
    }
    cycles
}

/// Import cycles that exist while they are being taken apart; a cycle not listed here fails
/// the test, and so does a listed one that no longer exists.
const KNOWN_CYCLES: &[&str] = &[];

#[test]
fn tidy_no_import_cycles_between_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for (name, src) in [
        ("taskbridge", root.join("src")),
        ("taskbridge-ews", root.join("crates/ews/src")),
        ("taskbridge-sim", root.join("crates/sim/src")),
    ] {
        found.extend(
            import_cycles(&src)
                .into_iter()
                .map(|c| format!("{name} {c}")),
        );
    }
    let new: Vec<&String> = found
        .iter()
        .filter(|c| !KNOWN_CYCLES.contains(&c.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN_CYCLES
        .iter()
        .filter(|k| !found.iter().any(|c| c == *k))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "import cycles between sibling modules (move the shared item to the module that owns \
         it):\n{}\nlisted as known but gone (remove from KNOWN_CYCLES): {gone:?}",
        new.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The import cycles of a crate made of `files` (path under `src/`, text), written to a
/// temporary folder for the finder and removed after.
fn cycles_of(name: &str, files: &[(&str, &str)]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("tidy-{name}-{}", std::process::id()));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("under the folder")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let cycles = import_cycles(&dir);
    std::fs::remove_dir_all(&dir).ok();
    cycles
}

#[test]
fn tidy_the_cycle_finder_sees_a_cycle() {
    let cycles = cycles_of(
        "cycles",
        &[
            ("lib.rs", "//! x\nmod a;\nmod b;\n"),
            ("a/mod.rs", "//! a\nuse crate::b::B;\nmod inner;\n"),
            ("a/inner.rs", "//! inner\nuse super::super::c::C;\n"),
            ("b.rs", "//! b\nuse crate::{c, a};\n"),
            ("c.rs", "//! c\n// use crate::a; only a comment\n"),
        ],
    );
    assert_eq!(cycles, vec!["crate: {a, b}".to_string()]);
}

#[test]
fn tidy_the_cycle_finder_reads_wrapped_and_nested_groups() {
    let cycles = cycles_of(
        "groups",
        &[
            ("lib.rs", "//! x\nmod c;\nmod d;\nmod e;\n"),
            (
                "c.rs",
                "//! c\nuse crate::{\n    d::{self, D},\n    e as renamed,\n};\n",
            ),
            ("d.rs", "//! d\nuse super::{\n    c::C,\n};\n"),
            ("e.rs", "//! e\n"),
        ],
    );
    assert_eq!(cycles, vec!["crate: {c, d}".to_string()]);
}

#[test]
fn tidy_the_layer_check_reads_groups() {
    let mut used = uses("use crate::{\n    ews::X,\n    pm::{a, b as c}, // crate::console\n};\n");
    used.sort();
    used.dedup();
    assert_eq!(used, ["ews", "pm"]);
}
