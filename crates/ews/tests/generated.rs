//! Generated code stays in step with `wsdl/`, as rust-analyzer keeps its generated syntax
//! tree: this test regenerates `src/generated/operations.rs` from the WSDL and, when the
//! checked-in file differs, writes the new one and fails, so that a schema change shows up in
//! the diff and is committed together with the code it changes. No second binary and no public
//! generator module are needed for it.

mod codegen;

use std::path::Path;

#[test]
fn generated_code_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (file, expected) in codegen::generate_files(root).expect("generate") {
        let path = root.join(file);
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            std::fs::write(&path, &expected).expect("write the generated file");
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} were stale and have been regenerated from wsdl/: review and commit them"
    );
}

#[test]
fn snake_case_splits_words() {
    assert_eq!(codegen::snake_case("SyncFolderItems"), "sync_folder_items");
    assert_eq!(codegen::snake_case("GetItem"), "get_item");
    assert_eq!(codegen::snake_case("URL"), "url");
    assert_eq!(
        codegen::snake_case("ExtendedFieldURI"),
        "extended_field_uri"
    );
    assert_eq!(codegen::snake_case("IDFormat"), "id_format");
}
