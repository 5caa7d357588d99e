//! `cellar db list|ping PROFILE [--mirror]`: debug the connection.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::DbCommand;
use crate::profile::{DbConn, Kind, Profile};
use crate::source::{mariadb, postgres};
use crate::Failure;

fn conn(p: &Profile, mirror: bool) -> Result<DbConn, Failure> {
    let Some(pg) = p.source.database() else {
        return Err(Failure::config(anyhow!(
            "{} is a files profile; db commands need a postgres or mariadb profile",
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
            let dbs = match p.kind {
                Kind::Mariadb => mariadb::list_databases(&c)?,
                _ => postgres::list_databases(&c)?,
            };
            // One name a line: a line break in a name is shown as `\n`.
            for db in dbs {
                println!("{}", crate::logging::one_line(&db));
            }
        }
        DbCommand::Ping { profile, mirror } => {
            let p = super::load_one(dir, profile)?;
            let c = conn(&p, *mirror)?;
            if p.kind == Kind::Mariadb {
                let version = mariadb::ping(&c, None)?;
                println!("{}: ok (MariaDB {version})", c.describe());
            } else {
                let version = postgres::ping(&c, "postgres")?;
                println!("{}: ok (PostgreSQL {version})", c.describe());
            }
        }
    }
    Ok(0)
}
