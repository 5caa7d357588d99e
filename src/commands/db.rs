//! `cellar db list|ping PROFILE [--mirror]`: debug the connection.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::DbCommand;
use crate::profile::{PgConn, Profile, Source};
use crate::source::postgres;
use crate::Failure;

fn conn(p: &Profile, mirror: bool) -> Result<PgConn, Failure> {
    let Source::Postgres(pg) = &p.source else {
        return Err(Failure::config(anyhow!(
            "{} is a files profile; db commands need a postgres profile",
            p.name
        )));
    };
    if mirror {
        let m = p.mirror.as_ref().ok_or_else(|| {
            Failure::config(anyhow!("{} has no [mirror] table", p.file.display()))
        })?;
        Ok(m.conn.clone())
    } else {
        Ok(pg.conn.clone())
    }
}

pub fn run(dir: &Path, cmd: &DbCommand) -> Result<i32, Failure> {
    match cmd {
        DbCommand::List { profile, mirror } => {
            let p = super::load_one(dir, profile)?;
            let c = conn(&p, *mirror)?;
            for db in postgres::list_databases(&c)? {
                println!("{db}");
            }
        }
        DbCommand::Ping { profile, mirror } => {
            let p = super::load_one(dir, profile)?;
            let c = conn(&p, *mirror)?;
            let version = postgres::ping(&c, "postgres")?;
            println!("{}: ok (PostgreSQL {version})", c.describe());
        }
    }
    Ok(0)
}
