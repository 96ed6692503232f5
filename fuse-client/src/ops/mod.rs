//! The file-system operations, as methods of `Client`: `namespace` (names, links,
//! xattrs, statfs), `attr` (attributes and their cache, setattr), `copy` (copy_file_range: shared
//! extents, else a data copy), `io` (open, read,
//! write, fsync), `dir` (directory listing). Only `kernel` calls into them from above.

pub mod attr;
pub mod copy;
pub mod dir;
pub(crate) mod io;
pub mod namespace;
