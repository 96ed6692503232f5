//! File data held by the client: `dirty` (buffered writes), `cache` (clean blocks),
//! `extents` (extent maps and their cache), `writeback` (dirty data → log → commits).

pub mod cache;
pub mod dirty;
pub mod extents;
pub mod writeback;
