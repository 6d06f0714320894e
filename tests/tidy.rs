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
    ("state", &["pm", "mapping", "sqlite"]),
    ("sync", &["pm", "mapping", "state"]),
    ("exchange", &["ews", "pm", "mapping", "state", "sync"]),
    ("listener", &["ews", "secret", "server"]),
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
