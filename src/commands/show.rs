//! `cellar show PROFILE`: the profile as cellar resolved it (defaults
//! filled in, paths absolute, certificates loaded), with secrets redacted.

use std::path::Path;

use crate::profile::{Databases, HookCommand, Source};
use crate::Failure;

fn hooks(name: &str, list: &[HookCommand]) {
    for h in list {
        println!(
            "  {name} = {:?}{}",
            h.text,
            if h.shell { " (sh -c)" } else { "" }
        );
    }
}

pub fn run(dir: &Path, name: &str) -> Result<i32, Failure> {
    let p = super::load_one(dir, name)?;
    println!("profile {} ({})", p.name, p.file.display());
    println!("kind = {}", p.kind.as_str());
    if let Some(s) = &p.schedule {
        println!("schedule = {:?} (local time)", s.expr);
    }
    if let Some(d) = p.rto {
        println!("rto = {:?}", humantime::format_duration(d).to_string());
    }
    if let Some(d) = p.rpo {
        println!("rpo = {:?}", humantime::format_duration(d).to_string());
    }
    println!("[source]");
    match &p.source {
        Source::Postgres(db) | Source::Mariadb(db) => {
            let pg = p.kind == crate::profile::Kind::Postgres;
            println!("  server = {}", db.conn.describe());
            if let Some(src) = &db.conn.password_source {
                println!("  password = {}", src.describe());
            }
            match &db.databases {
                Databases::One(d) => println!("  database = {d:?}"),
                Databases::Many(ds) => println!("  databases = {ds:?}"),
                Databases::All => println!("  all = true"),
            }
            if pg {
                println!("  format = {:?}", db.format);
            }
            println!("  globals = {}", db.globals);
            let (args, bin) = if pg {
                ("pg_dump_args", "pg_bin_dir")
            } else {
                ("dump_args", "bin_dir")
            };
            println!("  {args} = {:?}", db.dump_args);
            println!(
                "  {bin} = {}",
                db.conn
                    .bin_dir
                    .as_ref()
                    .map_or("(PATH)".to_string(), |d| d.display().to_string())
            );
        }
        Source::Files(fs) => {
            for path in &fs.paths {
                println!("  path = {:?}", path);
            }
            for x in &fs.exclude {
                println!("  exclude = {:?}", x.text);
            }
        }
    }
    println!(
        "[store]\n  url = {}",
        crate::logging::one_line(&p.store.url.to_string())
    );
    if let Some(o) = &p.store.s3 {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(default)".into());
        println!(
            "[store.s3]\n  bucket = {:?}\n  prefix = {:?}\n  region = {}\n  endpoint = {}\n  path_style = {}",
            o.bucket,
            o.prefix,
            opt(&o.region),
            opt(&o.endpoint),
            o.path_style
        );
        let key = |s: &Option<crate::secret::Secret>| {
            if s.is_some() {
                "<redacted>"
            } else {
                "(from the environment or instance role)"
            }
        };
        println!("  access_key_id = {}", key(&o.access_key_id));
        println!("  secret_access_key = {}", key(&o.secret_access_key));
        println!(
            "  storage_class = {}\n  server_side_encryption = {}",
            opt(&o.storage_class),
            opt(&o.server_side_encryption)
        );
        if let Some((mode, days)) = &o.object_lock {
            println!("  object_lock = {mode} for {days} day(s)");
        }
        println!(
            "  part_size_mib = {}\n  timeout = {:?}\n  max_attempts = {}",
            o.part_size >> 20,
            humantime::format_duration(o.timeout).to_string(),
            o.max_attempts
        );
    }
    if let Some(t) = &p.store.sftp {
        println!(
            "[store.sftp]\n  server = {}{}:{}\n  root = {}",
            t.user.as_ref().map_or(String::new(), |u| format!("{u}@")),
            t.host,
            t.port,
            t.root.display()
        );
        if let Some(k) = &t.identity_file {
            println!("  identity_file = {:?}", k);
        }
        if let Some(k) = &t.known_hosts {
            println!("  known_hosts = {:?}", k);
        }
    }
    println!("[encryption]");
    for r in &p.encryption.recipients {
        println!("  recipient = {} ({})", r.path.display(), r.fingerprint());
    }
    if let Some(i) = &p.encryption.identity {
        println!("  identity = {}", i.display());
    }
    if p.encryption.passphrase.is_some() {
        println!("  passphrase = <redacted>");
    }
    if let Some(s) = &p.encryption.signer {
        println!("  signer = {s:?}");
    }
    for c in &p.encryption.trusted_signers {
        println!("  trusted signer = {}", c.fingerprint());
    }
    if let Some(id) = &p.encryption.allow_unsigned_before {
        println!("  allow_unsigned_before = {id:?}");
    }
    let c = p.compression;
    println!(
        "[compression]\n  algorithm = {:?}\n  level = {}\n  threads = {} ({} used)",
        c.algorithm,
        c.level,
        c.threads,
        c.effective_threads()
    );
    let r = p.retention;
    println!(
        "[retention]\n  daily = {}\n  weekly = {}\n  monthly = {}",
        r.daily, r.weekly, r.monthly
    );
    if let Some(m) = &p.mirror {
        println!(
            "[mirror]\n  database = {:?} on {}",
            m.database,
            m.conn.describe()
        );
    }
    println!("[hooks]");
    hooks("before", &p.hooks.before);
    hooks("after", &p.hooks.after);
    hooks("on_failure", &p.hooks.on_failure);
    println!(
        "[canary]\n  shrink_warn = {}%\n  strict = {}",
        p.canary.shrink_warn, p.canary.strict
    );
    Ok(0)
}
