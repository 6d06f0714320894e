//! The generated operation surface, and the index of all code generated from the workspace's
//! `wsdl/` (never edited by hand). The generator is the test `tests/generated.rs` of this crate,
//! which rewrites the files when the WSDL or the schema changed. Each generated file lives in
//! the layer its code belongs to, so that no module imports from a layer above it:
//!
//! - `crate::types::generated`: the `t:` wire types from `wsdl/types.xsd`;
//! - `crate::ops::generated`: requests, response payloads and response bodies from
//!   `wsdl/messages.xsd`;
//! - `operations` (here, the top): the operation surface from `wsdl/services.wsdl`, above the
//!   service it calls, and a server's dispatch by operation name (`OperationVisitor`, which the
//!   simulator implements);
//! - `crate::decode::dispatch`: every message body element with its operation, role and JSON
//!   reader, from `wsdl/services.wsdl`, `wsdl/notification.wsdl` and the schema (what
//!   `ews decode` routes by, and the operation list a server can route by).
//!
//! The wire types are re-exported where callers find them (`ops::<operation>`, `types`); the
//! body table is re-exported here.

mod operations;

pub use crate::decode::{BodyRole, MESSAGE_BODIES, MessageBody, message_body};
pub use operations::{EwsOperations, OPERATIONS, OperationInfo, OperationVisitor, visit_operation};

// Keeps the generated body table honest: every WSDL operation decodes by it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::DecodeError;

    #[test]
    fn decode_knows_every_wsdl_operation() {
        for op in OPERATIONS {
            for name in [op.request, op.response] {
                let xml = format!(
                    r#"<s:Envelope xmlns:s="{}"><s:Body><m:{name} xmlns:m="{}"/></s:Body></s:Envelope>"#,
                    crate::xml::NS_SOAP,
                    crate::xml::NS_MESSAGES
                );
                let v = crate::decode::decode(xml.as_bytes(), 1 << 20);
                // An empty request body may lack required children; what matters is that the
                // name is recognised, so either it decodes or it fails on a missing element.
                match v {
                    Ok(v) => assert!(v["body"].get("generic").is_none(), "{name}"),
                    Err(
                        DecodeError::MissingElement { .. } | DecodeError::MissingAttribute { .. },
                    ) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        }
    }

    /// Answers with the operation it was routed to.
    struct Echo;

    impl OperationVisitor for Echo {
        type Output = String;
        fn unhandled(self, operation: &'static OperationInfo) -> String {
            operation.name.to_string()
        }
        fn unknown(self, name: &str) -> String {
            format!("unknown {name}")
        }
    }

    #[test]
    fn visit_operation_routes_every_wsdl_operation_to_its_own_method() {
        for op in OPERATIONS {
            assert_eq!(visit_operation(op.name, Echo), op.name);
        }
        assert_eq!(
            visit_operation("GetUserOofSettings", Echo),
            "unknown GetUserOofSettings"
        );
        assert_eq!(visit_operation("getitem", Echo), "unknown getitem");
    }

    #[test]
    fn message_bodies_name_both_sides_of_every_operation() {
        for op in OPERATIONS {
            let request = message_body(op.request).expect(op.request);
            assert_eq!(
                (request.operation, request.role),
                (op.name, BodyRole::Request)
            );
            let response = message_body(op.response).expect(op.response);
            assert_eq!(
                (response.operation, response.role),
                (op.name, BodyRole::Response)
            );
        }
        // The push subscriber's side, from notification.wsdl.
        let push = message_body("SendNotification").expect("SendNotification");
        assert_eq!(push.role, BodyRole::Notification);
        let answer = message_body("SendNotificationResult").expect("SendNotificationResult");
        assert_eq!(answer.role, BodyRole::NotificationResult);
        assert_eq!(MESSAGE_BODIES.len(), 2 * OPERATIONS.len() + 2);
    }
}
