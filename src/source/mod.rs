//! Data sources: PostgreSQL (pg_dump, pg_dumpall, and the way back with
//! pg_restore/psql) and folders (tar: files.rs writes, untar.rs reads).

pub mod files;
pub mod postgres;
pub mod untar;
