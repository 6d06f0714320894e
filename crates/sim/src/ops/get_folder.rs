//! GetFolder: the well-known folders of a mailbox (Tasks above all) by distinguished name or id.

use crate::ids::{self, FolderKind};
use crate::ops::{Ctx, SimOp, error_message};
use taskbridge_ews::ops::get_folder::{FolderPayload, GetFolder, GetFolderResponse};
use taskbridge_ews::soap::Fault;
use taskbridge_ews::types::{
    AnyFolder, BaseShape, Folder, FolderId, Folders, Path, ResponseMessage,
};

impl SimOp for GetFolder {
    fn count(&self) -> usize {
        self.folder_ids.0.len()
    }

    fn error_payload() -> FolderPayload {
        FolderPayload::default()
    }

    fn check_schema(&self) -> Result<(), String> {
        super::get_item::check_shape(&self.folder_shape.base_shape)
    }

    fn handle(self, ctx: &mut Ctx<'_>) -> Result<GetFolderResponse, Box<Fault>> {
        let messages = self
            .folder_ids
            .0
            .iter()
            .map(|id| match ctx.resolve_folder(id) {
                Err(e) => error_message(e, Self::error_payload()),
                Ok((mb, kind)) => {
                    let total = mb.lock().folder_items(kind).len();
                    let full = Folder {
                        folder_id: Some(FolderId {
                            id: ids::folder_id(mb.no, kind),
                            change_key: Some(ids::folder_change_key(mb.no, kind)),
                        }),
                        parent_folder_id: (kind != FolderKind::Root).then(|| FolderId {
                            id: ids::folder_id(mb.no, FolderKind::Root),
                            change_key: Some(ids::folder_change_key(mb.no, FolderKind::Root)),
                        }),
                        folder_class: Some(kind.folder_class().into()),
                        display_name: Some(kind.display_name().into()),
                        total_count: Some(i32::try_from(total).unwrap_or(i32::MAX)),
                        child_folder_count: Some(if kind == FolderKind::Root { 3 } else { 0 }),
                    };
                    let mut out = match self.folder_shape.base_shape {
                        BaseShape::IdOnly => Folder {
                            folder_id: full.folder_id.clone(),
                            ..Folder::default()
                        },
                        BaseShape::Default => Folder {
                            folder_id: full.folder_id.clone(),
                            display_name: full.display_name.clone(),
                            total_count: full.total_count,
                            child_folder_count: full.child_folder_count,
                            ..Folder::default()
                        },
                        _ => full.clone(),
                    };
                    for path in self
                        .folder_shape
                        .additional_properties
                        .iter()
                        .flat_map(|p| &p.0)
                    {
                        if let Path::FieldUri(uri) = path {
                            match uri.as_str() {
                                "folder:FolderId" => out.folder_id = full.folder_id.clone(),
                                "folder:ParentFolderId" => {
                                    out.parent_folder_id = full.parent_folder_id.clone()
                                }
                                "folder:FolderClass" => {
                                    out.folder_class = full.folder_class.clone()
                                }
                                "folder:DisplayName" => {
                                    out.display_name = full.display_name.clone()
                                }
                                "folder:TotalCount" => out.total_count = full.total_count,
                                "folder:ChildFolderCount" => {
                                    out.child_folder_count = full.child_folder_count
                                }
                                _ => {}
                            }
                        }
                    }
                    ResponseMessage::success(FolderPayload {
                        folders: Some(Folders(vec![AnyFolder {
                            kind: kind.element().into(),
                            folder: out,
                        }])),
                    })
                }
            })
            .collect();
        Ok(GetFolderResponse {
            response_messages: messages,
        })
    }
}
