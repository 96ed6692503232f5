//! The file-system operations, as methods of `Client`: `namespace` (names, links,
//! xattrs, statfs), `attr` (attributes and their cache, setattr), `io` (open, read,
//! write, fsync), `dir` (directory listing). Only `kernel` calls into them from above.

pub mod attr;
pub mod dir;
pub(crate) mod io;
pub mod namespace;
