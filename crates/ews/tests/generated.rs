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
    let expected = codegen::generate_file(root).expect("generate");
    let path = root.join(codegen::GENERATED_PATH);
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        std::fs::write(&path, &expected).expect("write the generated file");
        panic!(
            "{} was stale and has been regenerated from {}: review and commit it",
            codegen::GENERATED_PATH,
            codegen::WSDL_PATH
        );
    }
}

#[test]
fn snake_case_splits_words() {
    assert_eq!(codegen::snake_case("SyncFolderItems"), "sync_folder_items");
    assert_eq!(codegen::snake_case("GetItem"), "get_item");
}
