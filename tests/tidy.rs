//! House rules checked as tests: layers only use the layers below them, every module says
//! what it is for, and no stub is left in the code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each layer (a folder or file under `src/`) and the crate modules it may use. `ews` and
/// `secret` are the `taskbridge-ews` crate, re-exported under those names.
const LAYERS: &[(&str, &[&str])] = &[
    ("sqlite", &[]),
    ("pm", &["secret", "server", "sqlite"]),
    ("mapping", &["ews", "pm"]),
    ("state", &["ews", "secret", "pm", "mapping", "sqlite"]),
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

/// The crate modules a file names in code (comments left out).
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
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

/// The module paths a file names (`crate::a::b`, `super::c`, and `crate::a::{b, c}` groups),
/// resolved against the file's own module path, comments left out.
fn named_paths(text: &str, own: &[String]) -> Vec<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (at, _) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            // `$crate::` and `crate::` both start from the root; `super::` from the parent.
            if at > 0 && code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let (mut path, mut rest) = if code[at..].starts_with("crate::") {
                (Vec::new(), &code[at + "crate::".len()..])
            } else {
                let mut parent = own.to_vec();
                parent.pop();
                let mut rest = &code[at + "super::".len()..];
                while let Some(r) = rest.strip_prefix("super::") {
                    parent.pop();
                    rest = r;
                }
                (parent, rest)
            };
            loop {
                if let Some(group) = rest.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or_default();
                    for member in inner.split(',') {
                        let name = ident(member.trim());
                        if !name.is_empty() && name != "self" {
                            let mut p = path.clone();
                            p.push(name);
                            found.push(p);
                        }
                    }
                    break;
                }
                let name = ident(rest);
                if name.is_empty() {
                    break;
                }
                rest = &rest[name.len()..];
                path.push(name);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            found.push(path);
        }
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

#[test]
fn tidy_the_cycle_finder_sees_a_cycle() {
    let dir = std::env::temp_dir().join(format!("tidy-cycles-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).expect("mkdir");
    std::fs::write(dir.join("lib.rs"), "//! x\nmod a;\nmod b;\n").expect("write");
    std::fs::write(
        dir.join("a/mod.rs"),
        "//! a\nuse crate::b::B;\nmod inner;\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("a/inner.rs"),
        "//! inner\nuse super::super::c::C;\n",
    )
    .expect("write");
    std::fs::write(dir.join("b.rs"), "//! b\nuse crate::{c, a};\n").expect("write");
    std::fs::write(dir.join("c.rs"), "//! c\n// use crate::a; only a comment\n").expect("write");
    let cycles = import_cycles(&dir);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(cycles, vec!["crate: {a, b}".to_string()]);
}
