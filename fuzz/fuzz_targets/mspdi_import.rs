//! Any bytes as a project file (MSPDI or JSON): a project or an import error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskbridge::pm::ProjectGuid;
use taskbridge::pm::import::{ImportOptions, import_bytes};

fuzz_target!(|data: &[u8]| {
    let options = ImportOptions {
        fallback_guid: Some(ProjectGuid(uuid::Uuid::nil())),
        ..ImportOptions::default()
    };
    if let Ok(project) = import_bytes(data, &options) {
        let _ = project.sync_units();
    }
});
