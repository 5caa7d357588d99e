//! From what the user wrote ([`raw`]) to a [`Profile`]: one validator
//! that records every problem with its line, key and fix.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::*;

use crate::secret::{self, SecretSource};

pub fn parse(
    config_dir: &Path,
    name: &str,
    rel: &Path,
    text: &str,
) -> Result<Profile, Vec<Problem>> {
    let loc = Locator {
        file: rel.to_owned(),
        text,
    };
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let mut p = loc.from_toml("", &e, "templates/");
            p.fix = "fix the TOML syntax at this spot".into();
            return Err(vec![p]);
        }
    };
    let mut v = Validator {
        loc: &loc,
        base: config_dir,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if secret::writable_by_others(&config_dir.join(rel)) {
        v.warnings.push(format!(
            "{} can be changed by other users (it, or the folder it is in, is writable by them), who could change what is backed up, where to and for whom; run chmod go-w on it and on its folder",
            rel.display()
        ));
    }
    if !valid_profile_name(name) {
        v.problem(
            None,
            "",
            format!("the profile name {name:?} (the file's stem) is not a plain name: it is a folder in every store"),
            "rename the file to letters, digits, `_`, `-` and `.` (not first), e.g. profiles/shop.toml",
        );
    }
    let table = doc.get_ref();
    for (key, _) in table.iter() {
        if !raw::TOP_LEVEL_KEYS.contains(&key.get_ref().as_ref()) {
            v.problem(
                Some(key.span()),
                "",
                format!("unknown key `{}`", key.get_ref()),
                format!(
                    "remove it; the top-level keys are: {}",
                    raw::TOP_LEVEL_KEYS.join(", ")
                ),
            );
        }
    }
    let get = |k: &str| {
        table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == k)
            .map(|(_, v)| v.clone())
    };

    let kind: Option<Kind> = match v.section::<Spanned<String>>(get("kind"), "kind", "templates/") {
        None => {
            v.problem(
                Some(0..0),
                "kind",
                "missing key `kind`",
                "add `kind = \"postgres\"`, `kind = \"mariadb\"` or `kind = \"files\"` at the top of the file",
            );
            None
        }
        Some(None) => None,
        Some(Some(k)) => match k.get_ref().as_str() {
            "postgres" => Some(Kind::Postgres),
            "mariadb" | "mysql" => Some(Kind::Mariadb),
            "files" => Some(Kind::Files),
            other => {
                v.problem(
                    Some(k.span()),
                    "kind",
                    format!("unknown kind `{other}`"),
                    "use \"postgres\", \"mariadb\" or \"files\"",
                );
                None
            }
        },
    };
    let template = match kind {
        Some(Kind::Postgres) => "templates/postgres.toml",
        Some(Kind::Mariadb) => "templates/mariadb.toml",
        Some(Kind::Files) => "templates/files.toml",
        None => "templates/",
    };

    let schedule = v
        .section::<Spanned<String>>(get("schedule"), "schedule", template)
        .flatten()
        .and_then(|s| match parse_cron(s.get_ref()) {
            Ok(cron) => Some(Schedule {
                expr: s.get_ref().clone(),
                cron,
            }),
            Err(e) => {
                v.problem(
                    Some(s.span()),
                    "schedule",
                    format!("invalid cron expression `{}`: {e}", s.get_ref()),
                    "use the 5-field crontab form, e.g. \"0 2 * * *\" for 02:00 every day",
                );
                None
            }
        });

    let retry_after = match v
        .section::<Spanned<String>>(get("retry_after"), "retry_after", template)
        .flatten()
    {
        None => Some(RETRY_AFTER),
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                v.problem(
                    Some(s.span()),
                    "retry_after",
                    format!("`{}` is not a duration: {e}", s.get_ref()),
                    "write a duration such as \"30m\" or \"2h\" (\"0s\" retries on every tick)",
                );
                None
            }
        },
    };

    let mut objective = |key: &str, example: &str| -> Option<std::time::Duration> {
        let s = v
            .section::<Spanned<String>>(get(key), key, template)
            .flatten()?;
        match humantime::parse_duration(s.get_ref()) {
            // A restore time is measured by drills, which restore a
            // database: a files profile has none to measure.
            Ok(_) if key == "rto" && kind == Some(Kind::Files) => {
                v.problem(
                    Some(s.span()),
                    key,
                    "a files profile has no restore drills to measure an rto with".to_string(),
                    "remove `rto`; `rpo` works for files profiles".to_string(),
                );
                None
            }
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                v.problem(
                    Some(s.span()),
                    key,
                    format!("`{}` is zero: no backup could meet it", s.get_ref()),
                    format!("write a duration such as \"{example}\", or leave `{key}` out"),
                );
                None
            }
            Err(e) => {
                v.problem(
                    Some(s.span()),
                    key,
                    format!("`{}` is not a duration: {e}", s.get_ref()),
                    format!("write a duration such as \"{example}\""),
                );
                None
            }
        }
    };
    let rto = objective("rto", "30m");
    let rpo = objective("rpo", "26h");

    let source = match kind {
        Some(Kind::Postgres) => v
            .required::<raw::PostgresSource>(get("source"), "source", template)
            .and_then(|s| v.postgres_source(s))
            .map(Source::Postgres),
        Some(Kind::Mariadb) => v
            .required::<raw::MariadbSource>(get("source"), "source", template)
            .and_then(|s| v.mariadb_source(s))
            .map(Source::Mariadb),
        Some(Kind::Files) => v
            .required::<raw::FilesSource>(get("source"), "source", template)
            .and_then(|s| v.files_source(s))
            .map(Source::Files),
        None => None,
    };
    let store = v
        .required::<raw::Store>(get("store"), "store", template)
        .and_then(|s| v.store(s));
    let encryption = v
        .required::<raw::Encryption>(get("encryption"), "encryption", template)
        .and_then(|e| v.encryption(e));
    let compression =
        match v.section::<raw::Compression>(get("compression"), "compression", template) {
            None => Some(raw::Compression::default()),
            Some(c) => c,
        }
        .and_then(|c| v.compression(c));
    let retention = match v.section::<raw::Retention>(get("retention"), "retention", template) {
        None => Some(raw::Retention::default()),
        Some(r) => r,
    }
    .map(|r| Retention {
        daily: r.daily.unwrap_or(7),
        weekly: r.weekly.unwrap_or(4),
        monthly: r.monthly.unwrap_or(12),
    });
    let restore = match v.section::<raw::Restore>(get("restore"), "restore", template) {
        None => Some(raw::Restore::default()),
        Some(r) => r,
    }
    .and_then(|r| v.restore(r));
    let mirror_value = get("mirror");
    let mirror_span = mirror_value.as_ref().map(|m| m.span());
    let mirror = match v.section::<raw::Mirror>(mirror_value, "mirror", template) {
        None => Some(None),
        Some(None) => None,
        Some(Some(m)) => {
            if kind == Some(Kind::Files) {
                v.problem(
                    mirror_span,
                    "mirror",
                    "[mirror] only applies to database profiles (postgres, mariadb)",
                    "remove the [mirror] table from this files profile",
                );
                None
            } else {
                source
                    .as_ref()
                    .and_then(|s| s.database())
                    .map(|db| v.mirror(m, db))
            }
        }
    };

    let hooks = match v.section::<raw::Hooks>(get("hooks"), "hooks", template) {
        None => Some(Hooks::default()),
        Some(h) => h.and_then(|h| v.hooks(h)),
    };
    let canary = match v.section::<raw::Canary>(get("canary"), "canary", template) {
        None => Some(Canary::default()),
        Some(c) => c.and_then(|c| v.canary(c)),
    };

    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let (
        Some(kind),
        Some(source),
        Some(store),
        Some(encryption),
        Some(compression),
        Some(retention),
        Some(restore),
        Some(mirror),
        Some(hooks),
        Some(canary),
    ) = (
        kind,
        source,
        store,
        encryption,
        compression,
        retention,
        restore,
        mirror,
        hooks,
        canary,
    )
    else {
        unreachable!("a missing part always records a problem")
    };
    Ok(Profile {
        name: name.to_string(),
        file: rel.to_owned(),
        kind,
        schedule,
        retry_after: retry_after.expect("checked with the other parts"),
        rto,
        rpo,
        source,
        store,
        encryption,
        compression,
        retention,
        restore,
        mirror,
        hooks,
        canary,
        warnings: v.warnings,
    })
}

pub(super) struct Validator<'a> {
    pub(super) loc: &'a Locator<'a>,
    pub(super) base: &'a Path,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
}

impl Validator<'_> {
    fn problem(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        // Paths inside the config dir are shown as the user wrote them.
        let prefix = format!("{}/", self.base.display());
        let message = message.into().replace(&prefix, "");
        let p = self.loc.problem(span, key, message, fix);
        self.problems.push(p);
    }

    /// None: absent. Some(None): present but invalid (problem recorded).
    fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: Option<Spanned<DeValue<'_>>>,
        key: &str,
        template: &str,
    ) -> Option<Option<T>> {
        let value = value?;
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(t) => Some(Some(t)),
            Err(e) => {
                let p = self.loc.from_toml(key, &e, template);
                self.problems.push(p);
                Some(None)
            }
        }
    }

    fn required<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: Option<Spanned<DeValue<'_>>>,
        key: &str,
        template: &str,
    ) -> Option<T> {
        match self.section(value, key, template) {
            Some(t) => t,
            None => {
                self.problem(
                    None,
                    key,
                    format!("missing table [{key}]"),
                    format!("add a [{key}] table; {template} shows one"),
                );
                None
            }
        }
    }

    fn secret(&mut self, spec: &Spanned<String>, key: &str) -> Option<(Secret, SecretSource)> {
        match secret::resolve(spec.get_ref(), self.base) {
            Ok(r) => {
                if let Some(w) = r.warning {
                    self.warnings
                        .push(format!("{}: {key}: {w}", self.loc.file.display()));
                }
                let file = self.base.join(&self.loc.file);
                if r.source == SecretSource::Literal && secret::readable_by_others(&file) {
                    self.warnings.push(format!(
                        "{}: {key}: the secret is written in a profile other users can read; run: chmod 600 {}, or move it to a 0600 file and write \"file:secrets/NAME\"",
                        self.loc.file.display(),
                        file.display()
                    ));
                }
                Some((r.secret, r.source))
            }
            Err(e) => {
                self.problem(Some(spec.span()), key, e.to_string(), e.fix());
                None
            }
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    /// A warning when others may write the key `rel`: they could put their
    /// own in its place and then do `what`.
    fn replaceable(&mut self, rel: &str, kind: &str, what: &str) {
        let path = self.path(rel);
        if secret::writable_by_others(&path) {
            self.warnings.push(format!(
                "{kind} {} can be replaced by other users (it, or the folder it is in, is writable by them), who could put their own key in its place and {what}; run chmod go-w on it and on its folder",
                path.display()
            ));
        }
    }

    /// `database`, `databases` or `all`: exactly one of them.
    fn database_choice(
        &mut self,
        database: Option<Spanned<String>>,
        databases: Option<Spanned<Vec<String>>>,
        all: Option<Spanned<bool>>,
    ) -> Option<Databases> {
        let chosen = [
            database.is_some(),
            databases.is_some(),
            all.as_ref().is_some_and(|a| *a.get_ref()),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let span = database
            .as_ref()
            .map(|d| d.span())
            .or(databases.as_ref().map(|d| d.span()))
            .or(all.as_ref().map(|d| d.span()));
        if chosen != 1 {
            self.problem(
                span,
                "source",
                if chosen == 0 {
                    "no database chosen"
                } else {
                    "choose only one of `database`, `databases` and `all`"
                },
                "set exactly one of: database = \"NAME\", databases = [\"A\", \"B\"], all = true",
            );
            None
        } else if let Some(d) = database {
            if d.get_ref().is_empty() {
                self.problem(
                    Some(d.span()),
                    "source.database",
                    "the database name is empty",
                    "name the database to back up, e.g. database = \"shop\"",
                );
                None
            } else {
                Some(Databases::One(d.into_inner()))
            }
        } else if let Some(ds) = databases {
            if ds.get_ref().is_empty() {
                self.problem(
                    Some(ds.span()),
                    "source.databases",
                    "the list is empty",
                    "name at least one database, or use all = true",
                );
                None
            } else {
                Some(Databases::Many(ds.into_inner()))
            }
        } else {
            Some(Databases::All)
        }
    }

    /// Extra dump arguments that would change what the dump writes, or
    /// where, are refused: the backup would not be what the manifest says,
    /// or not restorable. They are read as pg_dump reads them (bundled
    /// short options, values glued on), so no spelling slips past.
    fn pg_dump_args(&mut self, args: &[String]) -> bool {
        const KEY: &str = "source.pg_dump_args";
        const CELLARS: &[&str] = &[
            "file",
            "format",
            "create",
            "clean",
            "dbname",
            "host",
            "port",
            "username",
            "jobs",
            "password",
            "no-password",
            "snapshot",
            "filter",
            "help",
            "version",
        ];
        match crate::source::postgres::dump_options(args) {
            Err(why) => {
                self.problem(
                    None,
                    KEY,
                    why,
                    "write each option as pg_dump --help spells it, e.g. \"--exclude-table=audit\"",
                );
                false
            }
            Ok(options) => match options.iter().find(|(o, _)| CELLARS.contains(o)) {
                Some((o, a)) => {
                    self.problem(
                        None,
                        KEY,
                        format!("`{a}` (--{o}) is set by cellar itself (output, format, connection, snapshot) or breaks the restore (--create, --clean); --filter could hide either"),
                        "remove it; choose the format with `format`, the database with `database`, the server with host/port/user, and tables with --table/--exclude-table",
                    );
                    false
                }
                None => true,
            },
        }
    }

    fn postgres_source(&mut self, s: raw::PostgresSource) -> Option<DbSource> {
        let password = s
            .password
            .as_ref()
            .map(|p| self.secret(p, "source.password"));
        let databases = self.database_choice(s.database, s.databases, s.all);
        let args_ok = self.pg_dump_args(&s.pg_dump_args);
        let password = match password {
            Some(None) => return None,
            Some(Some(p)) => Some(p),
            None => None,
        };
        if !args_ok {
            return None;
        }
        Some(DbSource {
            conn: DbConn {
                mariadb: false,
                host: s.host.unwrap_or_else(|| "127.0.0.1".into()),
                port: s.port.unwrap_or(5432),
                user: s.user.unwrap_or_else(|| "postgres".into()),
                password: password.as_ref().map(|p| p.0.clone()),
                password_source: password.map(|p| p.1),
                bin_dir: s.pg_bin_dir.map(|d| self.path(&d)),
            },
            databases: databases?,
            format: s.format.unwrap_or(DumpFormat::Custom),
            globals: s.globals.unwrap_or(true),
            dump_args: s.pg_dump_args,
        })
    }

    fn mariadb_source(&mut self, s: raw::MariadbSource) -> Option<DbSource> {
        let password = s
            .password
            .as_ref()
            .map(|p| self.secret(p, "source.password"));
        let databases = self.database_choice(s.database, s.databases, s.all);
        // An allow-list: mariadb-dump also takes `--loose-`, `--enable-`,
        // `--skip-` forms and any unique prefix of an option, so refusing
        // names would never be complete. These change only how the dump is
        // written, or what it leaves out on purpose.
        const ALLOWED: &[&str] = &[
            "ignore-table",
            "ignore-table-data",
            "dump-history",
            "order-by-primary",
            "extended-insert",
            "skip-extended-insert",
            "complete-insert",
            "insert-ignore",
            "net-buffer-length",
            "max-allowed-packet",
            "skip-add-locks",
            "skip-tz-utc",
            "skip-dump-date",
            "compress",
            "ssl",
            "ssl-ca",
            "ssl-capath",
            "ssl-cert",
            "ssl-cipher",
            "ssl-key",
            "ssl-crl",
            "ssl-crlpath",
            "ssl-verify-server-cert",
        ];
        let mut args_ok = true;
        for a in &s.dump_args {
            let name = a
                .strip_prefix("--")
                .map(|n| n.split('=').next().unwrap_or(n));
            if !name.is_some_and(|n| ALLOWED.contains(&n)) {
                args_ok = false;
                self.problem(
                    None,
                    "source.dump_args",
                    format!("`{a}` is not an option cellar passes to mariadb-dump: cellar sets the output, the connection and what a whole dump holds itself"),
                    format!(
                        "remove it; dump_args takes these options, spelled out in full: --{}",
                        ALLOWED.join(", --")
                    ),
                );
            }
        }
        let socket = s.socket.map(|p| {
            let path = p.get_ref().clone();
            if !path.starts_with('/') {
                self.problem(
                    Some(p.span()),
                    "source.socket",
                    format!("the socket {path:?} is not an absolute path"),
                    "write the socket file's full path, e.g. socket = \"/run/mysqld/mysqld.sock\"",
                );
            }
            path
        });
        let password = match password {
            Some(None) => return None,
            Some(Some(p)) => Some(p),
            None => None,
        };
        if !args_ok {
            return None;
        }
        Some(DbSource {
            conn: DbConn {
                mariadb: true,
                host: socket.or(s.host).unwrap_or_else(|| "127.0.0.1".into()),
                port: s.port.unwrap_or(3306),
                user: s.user.unwrap_or_else(|| "root".into()),
                password: password.as_ref().map(|p| p.0.clone()),
                password_source: password.map(|p| p.1),
                bin_dir: s.bin_dir.map(|d| self.path(&d)),
            },
            databases: databases?,
            format: DumpFormat::Plain,
            globals: s.globals.unwrap_or(true),
            dump_args: s.dump_args,
        })
    }

    fn files_source(&mut self, s: raw::FilesSource) -> Option<FilesSource> {
        if s.paths.get_ref().is_empty() {
            self.problem(
                Some(s.paths.span()),
                "source.paths",
                "the list is empty",
                "list at least one folder or file to back up",
            );
            return None;
        }
        let mut ok = true;
        let mut exclude = Vec::new();
        for e in &s.exclude {
            match Exclude::parse(e.get_ref()) {
                Ok(x) => exclude.push(x),
                Err(err) => {
                    ok = false;
                    self.problem(
                        Some(e.span()),
                        "source.exclude",
                        format!("invalid pattern `{}`: {err}", e.get_ref()),
                        "use shell-style globs such as \"*.tmp\" or \"cache/\"",
                    )
                }
            }
        }
        // Each path once, none inside another: two entries of one name
        // cannot both be restored.
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in s.paths.get_ref() {
            if p.get_ref().trim().is_empty() || p.get_ref().contains('\0') {
                ok = false;
                self.problem(
                    Some(p.span()),
                    "source.paths",
                    "an empty path, or one with a NUL byte",
                    "list absolute paths of folders or files, e.g. \"/var/www\"",
                );
                continue;
            }
            let path = self.path(p.get_ref());
            let normal: PathBuf = path.components().collect();
            let base: PathBuf = self.base.components().collect();
            if normal == base {
                // The config dir holds the secret keys, and often the store.
                ok = false;
                self.problem(
                    Some(p.span()),
                    "source.paths",
                    format!("`{}` is the config dir {}, with its secret keys, state and often the store", p.get_ref(), self.base.display()),
                    "list the folders to back up, not the config dir itself",
                );
                continue;
            }
            if path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                ok = false;
                self.problem(
                    Some(p.span()),
                    "source.paths",
                    format!("`{}` has a `..` component", p.get_ref()),
                    "write the path without `..`",
                );
                continue;
            }
            // Lexically normal: no `.`, no trailing `/`.
            let path: PathBuf = path.components().collect();
            if let Some(other) = paths
                .iter()
                .find(|o| path.starts_with(o) || o.starts_with(&path))
            {
                ok = false;
                let fix = if *other == path {
                    "list each path once".to_string()
                } else if path.starts_with(other) {
                    format!(
                        "remove `{}`: it is inside `{}`, which is backed up whole",
                        p.get_ref(),
                        other.display()
                    )
                } else {
                    format!(
                        "remove `{}` or `{}`: the first holds the second",
                        p.get_ref(),
                        other.display()
                    )
                };
                self.problem(
                    Some(p.span()),
                    "source.paths",
                    format!(
                        "`{}` overlaps `{}`, listed before it",
                        p.get_ref(),
                        other.display()
                    ),
                    fix,
                );
                continue;
            }
            paths.push(path);
        }
        ok.then_some(FilesSource {
            paths,
            exclude,
            fail_on_change: s.fail_on_change.unwrap_or(false),
            skip_unreadable: s.skip_unreadable.unwrap_or(false),
        })
    }

    fn store(&mut self, s: raw::Store) -> Option<StoreConfig> {
        let url = s.url.get_ref().clone();
        let scheme = url.split_once("://").map(|(s, _)| s);
        let known = matches!(scheme, Some("file" | "s3" | "sftp" | "swift"));
        if !known {
            self.problem(
                Some(s.url.span()),
                "store.url",
                format!("unsupported store url `{url}`"),
                "use file:///PATH, s3://BUCKET/PREFIX, sftp://USER@HOST:PORT/PATH or swift://CONTAINER/PREFIX",
            );
            return None;
        }
        if url
            .strip_prefix("file://")
            .is_some_and(|p| p.trim_matches('/').is_empty())
        {
            // `file://` would be the config dir itself, `file:///` the root.
            self.problem(
                Some(s.url.span()),
                "store.url",
                format!("`{url}` names no folder"),
                "name the store's folder, e.g. file:///var/backups/cellar (or file://store, relative to the config dir)",
            );
            return None;
        }
        if let (Some(t), false) = (&s.s3, scheme == Some("s3")) {
            self.problem(
                Some(t.span()),
                "store.s3",
                "[store.s3] is set but the url is not s3://",
                "remove [store.s3] or change the url",
            );
        }
        if let (Some(t), false) = (&s.sftp, scheme == Some("sftp")) {
            self.problem(
                Some(t.span()),
                "store.sftp",
                "[store.sftp] is set but the url is not sftp://",
                "remove [store.sftp] or change the url",
            );
        }
        let sftp = if scheme == Some("sftp") {
            let r = crate::store::sftp::SftpTarget::resolve(&s.url, s.sftp, self.base);
            Some(self.resolved(r)?)
        } else {
            None
        };
        let s3 = if scheme == Some("s3") {
            let table = s.s3.map(Spanned::into_inner).unwrap_or_default();
            let r = crate::store::s3::S3Options::resolve(&s.url, table, self.base);
            Some(self.resolved(r)?)
        } else {
            None
        };
        let swift = self.swift(&s.url, s.swift, scheme == Some("swift"))?;
        Some(StoreConfig {
            url,
            s3,
            sftp,
            swift,
        })
    }

    /// `[store.swift]`, resolved by the store module that uses it.
    fn swift(
        &mut self,
        url: &Spanned<String>,
        table: Option<Spanned<crate::store::swift::SwiftConfig>>,
        wanted: bool,
    ) -> Option<Option<crate::store::swift::SwiftOptions>> {
        if !wanted {
            if let Some(t) = &table {
                self.problem(
                    Some(t.span()),
                    "store.swift",
                    "[store.swift] is set but the url is not swift://",
                    "remove [store.swift] or change the url",
                );
            }
            return Some(None);
        }
        let r = crate::store::swift::resolve(url, table.as_ref(), self.base);
        Some(Some(self.resolved(r)?))
    }

    /// What a store module resolved from the url and its `[store.*]` table:
    /// its warnings, or its problems recorded.
    fn resolved<T>(
        &mut self,
        r: Result<crate::store::Resolved<T>, Vec<crate::store::ConfigProblem>>,
    ) -> Option<T> {
        match r {
            Ok(r) => {
                let file = self.loc.file.display().to_string();
                self.warnings
                    .extend(r.warnings.into_iter().map(|w| format!("{file}: {w}")));
                Some(r.options)
            }
            Err(problems) => {
                for p in problems {
                    self.problem(p.span, &p.key, p.message, p.fix);
                }
                None
            }
        }
    }

    fn encryption(&mut self, e: raw::Encryption) -> Option<Encryption> {
        if e.recipients.get_ref().is_empty() {
            self.problem(
                Some(e.recipients.span()),
                "encryption.recipients",
                "no recipients",
                "list at least one public key file, e.g. [\"secrets/ops.pub.asc\"] (make one with `cellar keygen ops`)",
            );
            return None;
        }
        let mut recipients = Vec::new();
        let mut ok = true;
        for r in e.recipients.get_ref() {
            match keys::load_recipient(&self.path(r.get_ref())) {
                Ok(c) if c.is_secret() => {
                    // It works, but the secret key then sits wherever
                    // backups are made: recipients need public keys only.
                    ok = false;
                    self.problem(
                        Some(r.span()),
                        "encryption.recipients",
                        format!("{} is a secret key", r.get_ref()),
                        "list the public key instead (NAME.pub.asc, or `gpg --armor --export`); keep the secret key only where you restore",
                    );
                }
                Ok(c) => {
                    self.replaceable(
                        r.get_ref(),
                        "recipient key",
                        "read every backup made after (and you none of them)",
                    );
                    recipients.push(c)
                }
                Err(err) => {
                    ok = false;
                    let fix = match &err {
                        keys::KeyError::Read { .. } => "fix the path, or create the key with `cellar keygen NAME`".to_string(),
                        _ => "point the entry at an armored OpenPGP public key (`gpg --armor --export`)".to_string(),
                    };
                    self.problem(
                        Some(r.span()),
                        "encryption.recipients",
                        err.to_string(),
                        fix,
                    );
                }
            }
        }
        let passphrase = match &e.passphrase {
            Some(p) => Some(self.secret(p, "encryption.passphrase")?.0),
            None => None,
        };
        // Checked here, with its line, not first when a restore needs it.
        // A missing file is fine: a host that only makes backups needs no
        // secret key (verify and restore then say it is missing).
        if let Some(i) = e
            .identity
            .as_ref()
            .filter(|i| self.path(i.get_ref()).exists())
        {
            let path = self.path(i.get_ref());
            match keys::load_identity(&path, None) {
                Ok(_) => {
                    if crate::secret::readable_by_others(&path) {
                        self.warnings.push(format!(
                            "secret key {} is readable by other users; run: chmod 600 {}",
                            path.display(),
                            path.display()
                        ));
                    }
                }
                Err(err) => {
                    ok = false;
                    let fix = match &err {
                        keys::KeyError::Read { .. } => "make the file readable by cellar; the secret key is the NAME.key.asc that `cellar keygen NAME` wrote",
                        keys::KeyError::NoSecret { .. } => "point identity at the secret key (NAME.key.asc), not the public one",
                        _ => "point identity at an armored OpenPGP secret key (`gpg --armor --export-secret-keys`)",
                    };
                    self.problem(Some(i.span()), "encryption.identity", err.to_string(), fix);
                }
            }
        }
        let identity = e.identity.map(|i| self.path(i.get_ref()));
        let signer = match &e.signer {
            None => None,
            Some(sp) => match keys::load_signing_key(&self.path(sp.get_ref())) {
                Ok(k) => {
                    if crate::secret::readable_by_others(&k.path) {
                        self.warnings.push(format!(
                            "signing key {} is readable by other users; run: chmod 600 {}",
                            k.path.display(),
                            k.path.display()
                        ));
                    }
                    Some(k)
                }
                Err(err) => {
                    ok = false;
                    self.problem(
                        Some(sp.span()),
                        "encryption.signer",
                        err.to_string(),
                        "make a signing key with `cellar keygen --sign NAME` and point signer at secrets/NAME.sign.key.asc",
                    );
                    None
                }
            },
        };
        let mut trusted_signers = Vec::new();
        match &e.trusted_signers {
            Some(list) => {
                for t in list.get_ref() {
                    match keys::load_trusted_signer(&self.path(t.get_ref())) {
                        Ok(c) => {
                            self.replaceable(
                                t.get_ref(),
                                "trusted signer",
                                "have forged backups restored",
                            );
                            trusted_signers.push(c)
                        }
                        Err(err) => {
                            ok = false;
                            self.problem(
                                Some(t.span()),
                                "encryption.trusted_signers",
                                err.to_string(),
                                "list the public signing keys (NAME.sign.pub.asc) of the hosts whose backups this profile reads",
                            );
                        }
                    }
                }
            }
            None => trusted_signers.extend(signer.as_ref().map(|s| s.certificate())),
        }
        if e.signer.is_none() && e.trusted_signers.is_none() {
            ok = false;
            self.problem(
                Some(e.recipients.span()),
                "encryption.signer",
                "no signing key: manifests are signed so that nobody who can write to the store can plant a backup",
                "make one with `cellar keygen --sign host` and add signer = \"secrets/host.sign.key.asc\" to [encryption] (a host that only restores lists trusted_signers = [\"secrets/host.sign.pub.asc\"] instead)",
            );
        }
        let allow_unsigned_before = match &e.allow_unsigned_before {
            None => None,
            Some(id) if crate::manifest::parse_id(id.get_ref()).is_some() => {
                Some(id.get_ref().clone())
            }
            Some(id) => {
                ok = false;
                self.problem(
                    Some(id.span()),
                    "encryption.allow_unsigned_before",
                    format!("{:?} is not a backup id", id.get_ref()),
                    "use the id of the newest unsigned backup as `cellar list` prints it, e.g. \"20261121T020000Z\"",
                );
                None
            }
        };
        ok.then_some(Encryption {
            recipients,
            identity,
            passphrase,
            signer,
            trusted_signers,
            allow_unsigned_before,
        })
    }

    fn compression(&mut self, c: raw::Compression) -> Option<Compression> {
        let algorithm = c.algorithm.unwrap_or(Algorithm::Xz);
        let (default, max) = match algorithm {
            Algorithm::Xz => (6, 9),
            Algorithm::Zstd => (3, 19),
        };
        let level = match &c.level {
            Some(l)
                if *l.get_ref() > max || (algorithm == Algorithm::Zstd && *l.get_ref() == 0) =>
            {
                self.problem(
                    Some(l.span()),
                    "compression.level",
                    format!(
                        "level {} is out of range for {}",
                        l.get_ref(),
                        match algorithm {
                            Algorithm::Xz => "xz",
                            Algorithm::Zstd => "zstd",
                        }
                    ),
                    match algorithm {
                        Algorithm::Xz => "use an xz preset from 0 to 9 (default 6)",
                        Algorithm::Zstd => "use a zstd level from 1 to 19 (default 3)",
                    },
                );
                return None;
            }
            Some(l) => *l.get_ref(),
            None => default,
        };
        let threads = c.threads.unwrap_or(0);
        if threads > 1024 {
            self.problem(
                None,
                "compression.threads",
                format!("threads = {threads} is more than any machine has"),
                "use 0 (one per core) or the number of cores to use",
            );
            return None;
        }
        Some(Compression {
            algorithm,
            level,
            threads,
        })
    }

    fn restore(&mut self, r: raw::Restore) -> Option<RestoreConfig> {
        let mut out = RestoreConfig::default();
        if let Some(j) = &r.jobs {
            match *j.get_ref() {
                0 => {}
                n @ 1..=64 => out.jobs = n as usize,
                n => {
                    self.problem(
                        Some(j.span()),
                        "restore.jobs",
                        format!("jobs = {n} is more pg_restore workers than makes sense"),
                        "use 0 (one per core) or a number from 1 to 64",
                    );
                    return None;
                }
            }
        }
        if let Some(d) = &r.spool_dir {
            out.spool_dir = self.base.join(d);
        }
        Some(out)
    }

    fn mirror(&mut self, m: raw::Mirror, pg: &DbSource) -> Option<Mirror> {
        let source = pg.conn.clone();
        let database_span = Some(m.database.span());
        let database = m.database.into_inner();
        let password = match &m.password {
            Some(p) => Some(self.secret(p, "mirror.password")?),
            None => None,
        };
        let other_server = m.host.is_some() || m.port.is_some() || m.user.is_some();
        let conn = DbConn {
            mariadb: source.mariadb,
            host: m.host.unwrap_or(source.host.clone()),
            port: m.port.unwrap_or(source.port),
            user: m.user.unwrap_or(source.user.clone()),
            password: match &password {
                Some(p) => Some(p.0.clone()),
                None if !other_server => source.password.clone(),
                None => None,
            },
            password_source: match password {
                Some(p) => Some(p.1),
                None if !other_server => source.password_source.clone(),
                None => None,
            },
            bin_dir: source.bin_dir.clone(),
        };
        if database.trim().is_empty() {
            self.problem(
                database_span,
                "mirror.database",
                "[mirror] database is empty",
                "name the test database the mirror refreshes, e.g. database = \"shop_test\"",
            );
            return None;
        }
        if pg.backs_up(&conn, &database) {
            self.problem(
                database_span,
                "mirror.database",
                format!(
                    "the mirror target {} is a database this profile backs up, on the same server: a mirror would replace it with the last backup",
                    database
                ),
                "mirror into a separate test database, e.g. database = \"shop_test\", or set host/port in [mirror] for another server",
            );
            return None;
        }
        Some(Mirror {
            database,
            conn,
            after_restore: m.after_restore,
            checks: m.checks,
            keep_previous: m.keep_previous,
        })
    }
}

impl Validator<'_> {
    fn hook_list(
        &mut self,
        key: &str,
        list: &[Spanned<String>],
        shell: bool,
        timeout: std::time::Duration,
        pass_env: &[String],
    ) -> Option<Vec<HookCommand>> {
        let mut out = Vec::new();
        let mut ok = true;
        for h in list {
            match shell_words::split(h.get_ref()) {
                Ok(argv) if !argv.is_empty() => out.push(HookCommand {
                    text: h.get_ref().clone(),
                    argv,
                    shell,
                    timeout,
                    pass_env: pass_env.to_vec(),
                }),
                Ok(_) => {
                    ok = false;
                    self.problem(
                        Some(h.span()),
                        key,
                        "empty command",
                        "remove the empty entry",
                    );
                }
                Err(e) => {
                    ok = false;
                    self.problem(
                        Some(h.span()),
                        key,
                        format!("cannot split `{}` into words: {e}", h.get_ref()),
                        "close the quote, or set shell = true in [hooks] to hand the line to sh -c",
                    );
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn hooks(&mut self, h: raw::Hooks) -> Option<Hooks> {
        let timeout = match &h.timeout {
            None => HOOK_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    self.problem(
                        Some(t.span()),
                        "hooks.timeout",
                        format!("`{}` is not a duration", t.get_ref()),
                        "write a duration such as \"30s\", \"5m\" or \"1h\"",
                    );
                    return None;
                }
            },
        };
        let (shell, pass) = (h.shell, &h.pass_env);
        let before = self.hook_list("hooks.before", &h.before, shell, timeout, pass);
        let after = self.hook_list("hooks.after", &h.after, shell, timeout, pass);
        let on_failure = self.hook_list("hooks.on_failure", &h.on_failure, shell, timeout, pass);
        Some(Hooks {
            before: before?,
            after: after?,
            on_failure: on_failure?,
        })
    }

    fn canary(&mut self, c: raw::Canary) -> Option<Canary> {
        let shrink_warn = match c.shrink_warn {
            Some(s) if *s.get_ref() > 100 => {
                self.problem(
                    Some(s.span()),
                    "canary.shrink_warn",
                    format!("{} is not a percentage", s.get_ref()),
                    "use 1-100 (percent smaller than the previous dump), or 0 to turn the check off",
                );
                return None;
            }
            Some(s) => *s.get_ref(),
            None => Canary::default().shrink_warn,
        };
        Some(Canary {
            shrink_warn,
            strict: c.strict.unwrap_or(false),
        })
    }
}
