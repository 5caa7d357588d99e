//! Data sources: PostgreSQL (pg_dump, pg_dumpall, and the way back with
//! pg_restore/psql) and folders (tar).

pub mod files;
pub mod postgres;
