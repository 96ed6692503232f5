//! Directory operations: opendir, readdir (with `.` and `..`), releasedir. The paging and
//! cookie rules are in `data::listing`.
//! Must not hold a stream's lock longer than one readdir call.

use crate::client::{Client, FileHandle};
use crate::data::listing::{cookie_of, kernel_items, DirItem, PAGE};
use crate::error::FsError;
use crate::meta::{self as remote, Target};
use proto::ids::InodeId;
use proto::msg::{DirEntry, FileKind, ManagerRequest, ManagerResponse};

impl Client {
    pub async fn opendir(&self, ino: InodeId) -> Result<FileHandle, FsError> {
        let fh = self.next_fh();
        self.open_dirs.open(fh);
        let _ = ino;
        Ok(fh)
    }

    pub fn releasedir(&self, fh: FileHandle) {
        self.open_dirs.release(fh);
    }

    /// Entries after kernel offset `offset` (0 = from the start), including `.` and `..`.
    /// An empty answer means the end of the directory.
    pub async fn readdir(
        &self,
        ino: InodeId,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Vec<DirItem>, FsError> {
        let mut out = Vec::new();
        if offset == 0 {
            out.push(DirItem {
                offset: 1,
                ino,
                kind: FileKind::Dir,
                name: ".".into(),
            });
        }
        if offset <= 1 {
            let parent = self.parent_of(ino).await;
            out.push(DirItem {
                offset: 2,
                ino: parent,
                kind: FileKind::Dir,
                name: "..".into(),
            });
        }
        // A handle we do not know (should not happen) lists without buffering.
        let stream = self.open_dirs.stream(fh);
        let mut stream = stream.lock().await;
        let cookie = cookie_of(offset);
        self.meta.ensure_lease(ino).await;
        let generation = self.open_dirs.generation(ino);
        if stream.buffered(cookie, generation).is_none() {
            // The generation read before the fetch: a change during it refetches next time.
            let entries = self.read_page(ino, cookie).await?;
            stream.replace(cookie, generation, entries);
        }
        let page = stream.buffered(cookie, generation).unwrap_or_default();
        out.extend(kernel_items(page));
        Ok(out)
    }

    async fn read_page(&self, ino: InodeId, cookie: u64) -> Result<Vec<DirEntry>, FsError> {
        let req = ManagerRequest::ReadDir {
            ino,
            offset: cookie,
            max: PAGE,
        };
        match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Entries(e) => Ok(e),
            other => Err(remote::unexpected("ReadDir", &other)),
        }
    }

    /// The parent of directory `ino`: remembered from lookups, else asked (`..`), else
    /// `ino` itself.
    async fn parent_of(&self, ino: InodeId) -> InodeId {
        if ino == InodeId::ROOT {
            return ino;
        }
        self.meta.ensure_lease(ino).await;
        if let Some(p) = self.parents.get(ino) {
            return p;
        }
        let req = ManagerRequest::Lookup {
            parent: ino,
            name: "..".into(),
        };
        match self.meta.call(Target::Route, req).await {
            Ok(ManagerResponse::Attr(a)) => {
                self.parents.learn(ino, a.ino);
                a.ino
            }
            _ => ino,
        }
    }
}
