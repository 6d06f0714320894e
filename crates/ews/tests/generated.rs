//! Generated code stays in step with `wsdl/`, as rust-analyzer keeps its generated syntax
//! tree: this test regenerates the generated files (`src/generated/operations.rs`,
//! `src/types/generated.rs`, `src/ops/generated.rs`, `src/decode/dispatch.rs`) from the WSDL and
//! the schema and, when a checked-in file differs, writes the new one and fails, so that a schema change shows up in
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

/// A schema of three types: a choice of two elements, a repeated element, a bounded number.
const SMALL_SCHEMA: &str = r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t">
    <xs:simpleType name="PageSizeType">
        <xs:restriction base="xs:int">
            <xs:minInclusive value="1"/>
            <xs:maxInclusive value="512"/>
        </xs:restriction>
    </xs:simpleType>
    <xs:complexType name="PickType">
        <xs:choice>
            <xs:element name="Push" type="xs:string"/>
            <xs:element name="Pull" type="xs:string"/>
        </xs:choice>
    </xs:complexType>
    <xs:complexType name="BaseListType">
        <xs:sequence>
            <xs:element name="Note" type="xs:string" minOccurs="0"/>
        </xs:sequence>
    </xs:complexType>
    <xs:complexType name="ListType">
        <xs:complexContent>
            <xs:extension base="t:BaseListType">
                <xs:sequence>
                    <xs:choice maxOccurs="unbounded">
                        <xs:element name="Entry" type="xs:string"/>
                    </xs:choice>
                    <xs:element name="PageSize" type="t:PageSizeType"/>
                </xs:sequence>
                <xs:attribute name="Kind" type="xs:string" use="required"/>
            </xs:extension>
        </xs:complexContent>
    </xs:complexType>
</xs:schema>"#;

#[test]
fn schema_reader_folds_groups_and_bases_into_each_element() {
    let mut schema = codegen::xsd::Schema::default();
    schema.read(SMALL_SCHEMA, "t").expect("read");
    schema.resolve().expect("resolve");

    let (elements, attributes) = schema.content("t:ListType", None).expect("content");
    let summary: Vec<_> = elements
        .iter()
        .map(|(prefix, p)| (prefix.as_str(), p.name.as_str(), p.occurs.min, p.occurs.max))
        .collect();
    // The base's element first; the single-element choice takes the choice's bounds.
    assert_eq!(
        summary,
        [
            ("t", "Note", 0, Some(1)),
            ("t", "Entry", 1, None),
            ("t", "PageSize", 1, Some(1)),
        ]
    );
    assert_eq!(attributes.len(), 1);
    assert!(attributes[0].required);

    let range = &schema.simple["t:PageSizeType"];
    assert_eq!(
        (range.min.as_deref(), range.max.as_deref()),
        (Some("1"), Some("512"))
    );

    // Each alternative of a choice of two may be absent, and is marked as such.
    let (pick, _) = schema.content("t:PickType", None).expect("content");
    assert!(
        pick.iter()
            .all(|(_, p)| p.in_choice_of_many && p.occurs.min == 0)
    );
}

#[test]
fn an_operation_the_tables_leave_out_is_generated_by_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema = codegen::read_schema(root).expect("schema");
    let wsdl = std::fs::read_to_string(root.join(codegen::WSDL_PATH)).expect("wsdl");
    let services = codegen::read_operations(&wsdl, "ExchangeServicePortType").expect("operations");
    // Every operation is in the tables today: nothing is named by rule.
    let ruled = codegen::wire::by_rule(&schema, &services, codegen::wire::MESSAGES).expect("rule");
    assert!(
        ruled.is_empty(),
        "{:?}",
        ruled.iter().map(|e| e.rust).collect::<Vec<_>>()
    );
    // Without GetFolder's entries, its request and payload are named by the rule.
    let without: Vec<codegen::wire::Emit> = codegen::wire::MESSAGES
        .iter()
        .filter(|e| !matches!(e.rust, "GetFolder" | "FolderPayload"))
        .map(|e| codegen::wire::Emit { ..*e })
        .collect();
    let ruled = codegen::wire::by_rule(&schema, &services, &without).expect("rule");
    let named: Vec<(&str, &str)> = ruled.iter().map(|e| (e.schema, e.rust)).collect();
    assert_eq!(
        named,
        [
            ("m:GetFolderType", "GetFolder"),
            ("m:FolderInfoResponseMessageType", "GetFolderPayload"),
        ]
    );
}
