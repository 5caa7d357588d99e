//! End-to-end tests: the real `cellar` binary against a real PostgreSQL
//! 15 cluster, a real local store and the gpg/xz/pg_restore CLIs.

mod authenticity;
mod breakglass;
mod completeness;
mod damage;
mod drills;
mod files;
mod hardening;
mod harness;
mod live_files;
mod mariadb;
mod mirror;
mod myharness;
mod ops;
mod postgres;
mod profiles;
mod progress;
mod restore_engine;
mod retention;
mod review;
mod s3;
mod s3harness;
mod sftp;
mod sshharness;
mod swift;
mod swiftharness;
