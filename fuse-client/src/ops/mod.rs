//! The file-system operations: `namespace` (the client and its namespace and attribute
//! operations), `io` (open, read, write, fsync), `dir` (directory listing).

pub mod dir;
pub(crate) mod io;
pub mod namespace;
