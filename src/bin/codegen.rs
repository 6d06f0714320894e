//! Regenerates `src/ews/generated/operations.rs` from `wsdl/services.wsdl`.
//!
//! `cargo run --bin codegen` writes the file; `cargo run --bin codegen -- --check` only
//! reports whether it is stale (exit 1).

use std::path::Path;
use std::process::ExitCode;

use taskbridge::codegen;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = match codegen::generate_file(root) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let path = root.join(codegen::GENERATED_PATH);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == generated {
        eprintln!("{} is up to date", codegen::GENERATED_PATH);
        return ExitCode::SUCCESS;
    }
    if check {
        eprintln!("{} is stale", codegen::GENERATED_PATH);
        return ExitCode::FAILURE;
    }
    match std::fs::write(&path, generated) {
        Ok(()) => {
            eprintln!("wrote {}", codegen::GENERATED_PATH);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
