//! GetFolder: resolves a mailbox's Tasks folder to its id.
//! See <https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/getfolder>.

// Generated from wsdl/ (see `crate::ops::generated` and `crate::types::generated`).
pub use crate::ops::generated::{FolderPayload, GetFolder, GetFolderResponse};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::*;
    use crate::types::{BaseFolderId, BaseShape, FolderIdValue};
    use crate::types::{FolderIds, FolderShape};

    #[test]
    fn get_folder_request_names_tasks_of_a_mailbox() {
        let req = GetFolder {
            folder_shape: FolderShape {
                base_shape: BaseShape::IdOnly,
                additional_properties: None,
            },
            folder_ids: FolderIds(vec![BaseFolderId::tasks_of(Some("bob@example.com"))]),
        };
        assert_writes(
            &req,
            "m:GetFolder",
            r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="tasks"><t:Mailbox><t:EmailAddress>bob@example.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:FolderIds></m:GetFolder>"#,
        );
        assert_round_trip(&req, "m:GetFolder");
    }

    #[test]
    fn get_folder_response_reads_tasks_folder() {
        let xml = r#"<m:GetFolderResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages><m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Folders><t:TasksFolder><t:FolderId Id="AQMkTasks" ChangeKey="AQAAAB"/><t:DisplayName>Tasks</t:DisplayName><t:TotalCount>4</t:TotalCount></t:TasksFolder></m:Folders></m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse>"#;
        let resp: GetFolderResponse = read_str(xml);
        let folders = resp.response_messages[0]
            .payload
            .folders
            .as_ref()
            .expect("folders");
        assert_eq!(folders.0[0].kind, "TasksFolder");
        assert_eq!(
            folders.0[0].folder.folder_id.as_ref().map(|f| f.id.clone()),
            Some(FolderIdValue::from("AQMkTasks"))
        );
        assert_round_trip(&resp, "m:GetFolderResponse");
    }
}
