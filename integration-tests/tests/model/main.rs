//! A seeded random sequence of file operations through a real mount, checked step by step
//! against an in-memory model of a POSIX file system (`integration_tests::model`).

mod t10_model_self_check;
mod t20_random_ops_vs_model;
