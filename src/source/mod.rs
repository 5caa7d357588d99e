//! Data sources: PostgreSQL (pg_dump, pg_dumpall, and the way back with
//! pg_restore/psql), MariaDB (mariadb-dump, mariadb) and folders (tar: files.rs writes, untar.rs reads).

pub mod files;
pub mod mariadb;
pub mod postgres;
pub mod untar;
