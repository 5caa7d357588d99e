//! A store in an OpenStack Swift container (`swift://container/prefix`),
//! with OpenStack credentials: Keystone v3 (password or application
//! credential) or v1 auth (tempauth and other small installations).
//!
//! The guarantees are the S3 store's:
//!
//! - **Atomic writes.** An object smaller than one segment is one PUT, which
//!   Swift makes visible only once complete. A larger one is a Static Large
//!   Object: its segments are uploaded first under the hidden
//!   `<prefix>/.segments/<key>/<upload>/` (never listed as a backup), each
//!   with its MD5 as `ETag`, which Swift checks (422 when the bytes differ),
//!   and the SLO manifest is PUT last: the key exists only from then on.
//!   Every write carries `If-None-Match: *`, so nothing is ever replaced.
//! - **Bounded memory.** Segments are read from the pipeline one at a time,
//!   at most two in flight; they start at `segment_size_mib` and double every
//!   100 segments up to 1 GiB, so Swift's default limit of 1,000 segments per
//!   manifest holds about 500 GB with the default size.
//! - **Cleanup.** A failed upload deletes the segments it wrote (retried with
//!   backoff, since the server may be what failed); what a killed upload
//!   left is removed by [`Store::sweep`] (run by `prune`) once it is a day
//!   old and no manifest refers to it. Deleting an SLO deletes its segments
//!   (`?multipart-manifest=delete`).
//! - **Retries.** Every request is retried with exponential backoff on a
//!   network error, a timeout, 408, 429 or a 5xx; a 401 renews the token
//!   once (tokens expire during long uploads).
//! - **Streaming reads** that resume with a `Range` request from the byte
//!   they reached when the connection breaks.
//!
//! The profile's `[store.swift]` table is parsed here too ([`SwiftConfig`],
//! [`resolve`]), beside the store it builds: explicit keys win over an
//! OpenStack RC file (`rc_file`, read as text and never run), which wins
//! over the `OS_*` environment. Passwords and tokens are [`Secret`]s: never
//! in argv, logs or messages.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::runtime::Runtime;
use toml::Spanned;

use super::{ConfigProblem, ObjectInfo, Reader, Resolved, Store, StoreError};
use crate::secret::{self, Secret};

const MIB: usize = 1024 * 1024;
pub const DEFAULT_SEGMENT_SIZE: usize = 16 * MIB;
const MAX_SEGMENT: usize = 1024 * MIB;
/// Swift's default `max_manifest_segments`.
const MAX_SEGMENTS: usize = 1000;
/// Where segments live, under the store's prefix.
const SEGMENTS: &str = ".segments";

/// `[store.swift]` exactly as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwiftConfig {
    /// Keystone (`https://keystone:5000/v3`) or v1 auth (`.../auth/v1.0`).
    pub auth_url: Option<Spanned<String>>,
    /// 1 or 3; by default 1 when the url ends in `/v1.0`, else 3.
    pub auth_version: Option<Spanned<u32>>,
    pub username: Option<String>,
    #[serde(default, deserialize_with = "crate::profile::raw::secret_text")]
    pub password: Option<Spanned<String>>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub project_domain_name: Option<String>,
    pub region: Option<String>,
    /// Which catalog endpoint: "public" (default), "internal" or "admin".
    pub interface: Option<String>,
    pub application_credential_id: Option<String>,
    #[serde(default, deserialize_with = "crate::profile::raw::secret_text")]
    pub application_credential_secret: Option<Spanned<String>>,
    /// An OpenStack RC file (`openrc.sh`), read for `OS_*` assignments.
    pub rc_file: Option<Spanned<String>>,
    /// First segment size in MiB (default 16).
    pub segment_size_mib: Option<Spanned<u32>>,
    /// Per-request timeout, e.g. "2m" (default 2 minutes).
    pub timeout: Option<Spanned<String>>,
    /// Attempts per request, retries with backoff included (default 5).
    pub max_attempts: Option<u32>,
    /// Expiry hints: `X-Delete-At` this long after the backup's time, by
    /// the retention tier it is kept under, e.g. `{ daily = "10d", weekly
    /// = "6w", monthly = "400d" }`. A safety net, never the primary prune.
    pub delete_after: Option<Spanned<BTreeMap<String, String>>>,
}

/// How cellar logs in.
#[derive(Debug, Clone)]
pub enum Auth {
    /// v1 auth: `X-Auth-User: account:user`, `X-Auth-Key`.
    V1 {
        url: String,
        user: String,
        key: Secret,
    },
    /// Keystone v3 with a password, scoped to a project.
    V3Password {
        url: String,
        user: String,
        user_domain: String,
        password: Secret,
        project: Project,
    },
    /// Keystone v3 application credential (already scoped).
    V3AppCredential {
        url: String,
        id: String,
        secret: Secret,
    },
}

#[derive(Debug, Clone)]
pub enum Project {
    Name { name: String, domain: String },
    Id(String),
}

impl Auth {
    fn url(&self) -> &str {
        match self {
            Auth::V1 { url, .. }
            | Auth::V3Password { url, .. }
            | Auth::V3AppCredential { url, .. } => url,
        }
    }
}

/// Everything the Swift store needs, resolved from `[store.swift]`.
#[derive(Debug, Clone)]
pub struct SwiftOptions {
    pub container: String,
    pub prefix: String,
    pub auth: Auth,
    pub region: Option<String>,
    pub interface: String,
    pub segment_size: usize,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// (daily, weekly, monthly) ages for `X-Delete-At`.
    pub delete_after: Option<[Duration; 3]>,
}

/// `segment_size_mib`: Swift's largest object is 5 GiB.
const SEGMENT_SIZE: super::SizeKey = (
    "store.swift.segment_size_mib",
    "segment size",
    "use 1 to 5120 (Swift's largest object is 5 GiB); the default is 16",
    1,
    DEFAULT_SEGMENT_SIZE,
);

fn push(
    problems: &mut Vec<ConfigProblem>,
    span: Option<Range<usize>>,
    key: &str,
    message: String,
    fix: &str,
) {
    problems.push(ConfigProblem {
        span,
        key: key.to_string(),
        message,
        fix: fix.to_string(),
    })
}

/// The `OS_*` assignments of an OpenStack RC file, read as text: `export
/// OS_X=value` or `OS_X=value`, with single or double quotes. Lines that
/// compute a value (`$VAR`, `$(...)`, `read`) are skipped.
pub fn parse_rc(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("OS_") || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'') {
            match v.find('\'') {
                Some(end) => v[..end].to_string(),
                None => continue,
            }
        } else if let Some(v) = value.strip_prefix('"') {
            match v.find('"') {
                Some(end) if !v[..end].contains(['$', '`']) => v[..end].to_string(),
                _ => continue,
            }
        } else {
            let v = value.split(" #").next().unwrap_or(value).trim();
            if v.contains(['$', '`', ' ', '"', '\'']) {
                continue;
            }
            v.to_string()
        };
        if value.is_empty() {
            out.remove(name);
        } else {
            out.insert(name.to_string(), value);
        }
    }
    out
}

/// Resolves `[store.swift]` (which may be absent: then the `OS_*`
/// environment) for the url `swift://container/prefix`. Paths are relative
/// to `base`, the config dir.
pub fn resolve(
    url: &Spanned<String>,
    config: Option<&Spanned<SwiftConfig>>,
    base: &Path,
) -> Result<Resolved<SwiftOptions>, Vec<ConfigProblem>> {
    resolve_with(url, config, base, &|k| std::env::var(k).ok())
}

fn resolve_with(
    url: &Spanned<String>,
    config: Option<&Spanned<SwiftConfig>>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved<SwiftOptions>, Vec<ConfigProblem>> {
    let default = SwiftConfig::default();
    let (c, table_span) = match config {
        Some(c) => (c.get_ref(), Some(c.span())),
        None => (&default, None),
    };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let rest = url.get_ref().trim_start_matches("swift://");
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() || container.contains(['?', '#']) {
        push(
            &mut problems,
            Some(url.span()),
            "store.url",
            format!("`{}` names no container", url.get_ref()),
            "write swift://CONTAINER/PREFIX",
        );
    }

    // Where values come from: [store.swift], else the RC file, else OS_*.
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    let mut source = "the OS_* environment";
    if let Some(rc) = &c.rc_file {
        let path = base.join(rc.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                from = parse_rc(&text);
                source = "rc_file";
                if from.contains_key("OS_PASSWORD") && secret::readable_by_others(&path) {
                    warnings.push(format!(
                        "store.swift.rc_file: {} holds a password and is readable by other users; run: chmod 600 {}",
                        path.display(),
                        path.display()
                    ));
                }
            }
            Err(e) => push(
                &mut problems,
                Some(rc.span()),
                "store.swift.rc_file",
                format!("cannot read {}: {e}", path.display()),
                "download the project's RC file from the dashboard (API Access) to this path, or fix the path",
            ),
        }
    } else if c.auth_url.is_none() {
        for k in [
            "OS_AUTH_URL",
            "OS_USERNAME",
            "OS_PASSWORD",
            "OS_PROJECT_NAME",
            "OS_TENANT_NAME",
            "OS_PROJECT_ID",
            "OS_TENANT_ID",
            "OS_USER_DOMAIN_NAME",
            "OS_PROJECT_DOMAIN_NAME",
            "OS_REGION_NAME",
            "OS_INTERFACE",
            "OS_AUTH_TYPE",
            "OS_IDENTITY_API_VERSION",
            "OS_APPLICATION_CREDENTIAL_ID",
            "OS_APPLICATION_CREDENTIAL_SECRET",
        ] {
            if let Some(v) = env(k).filter(|v| !v.is_empty()) {
                from.insert(k.to_string(), v);
            }
        }
    }
    let pick = |own: &Option<String>, names: &[&str]| -> Option<String> {
        own.clone()
            .or_else(|| names.iter().find_map(|n| from.get(*n).cloned()))
    };
    let span = |s: Option<Range<usize>>| s.or(table_span.clone()).or(Some(url.span()));

    let auth_url = c
        .auth_url
        .as_ref()
        .map(|u| u.get_ref().clone())
        .or_else(|| from.get("OS_AUTH_URL").cloned());
    let auth_url_span = span(c.auth_url.as_ref().map(|u| u.span()));
    let secret_of = |spec: &Spanned<String>,
                     key: &str,
                     problems: &mut Vec<ConfigProblem>,
                     warnings: &mut Vec<String>| {
        let fix = |_: &secret::SecretError| {
            "give the secret as a literal, \"file:PATH\" (chmod 600) or \"env:VAR\""
        };
        super::secret(spec, key, base, fix, problems, warnings)
    };
    let password = match &c.password {
        Some(p) => secret_of(p, "store.swift.password", &mut problems, &mut warnings),
        None => from.get("OS_PASSWORD").map(Secret::new),
    };
    let app_secret = match &c.application_credential_secret {
        Some(p) => secret_of(
            p,
            "store.swift.application_credential_secret",
            &mut problems,
            &mut warnings,
        ),
        None => from
            .get("OS_APPLICATION_CREDENTIAL_SECRET")
            .map(Secret::new),
    };
    let app_id = pick(
        &c.application_credential_id,
        &["OS_APPLICATION_CREDENTIAL_ID"],
    );
    let username = pick(&c.username, &["OS_USERNAME"]);

    let auth = match auth_url {
        None => {
            problems.push(ConfigProblem {
                span: span(None),
                key: "store.swift.auth_url".into(),
                message: format!("no auth_url in [store.swift] nor in {source}"),
                fix: "set auth_url (e.g. \"https://keystone.example.com:5000/v3\"), or rc_file = \"secrets/openrc.sh\", or export the OS_* variables".into(),
            });
            None
        }
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            problems.push(ConfigProblem {
                span: auth_url_span,
                key: "store.swift.auth_url".into(),
                message: format!("auth_url `{u}` is not an http(s) url"),
                fix: "write the identity service's url, e.g. https://keystone.example.com:5000/v3"
                    .into(),
            });
            None
        }
        Some(u) => {
            let trimmed = u.trim_end_matches('/').to_string();
            let version = c
                .auth_version
                .as_ref()
                .map(|v| *v.get_ref())
                .or_else(|| {
                    from.get("OS_IDENTITY_API_VERSION")
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(if trimmed.ends_with("/v1.0") || trimmed.ends_with("/v1") {
                    1
                } else {
                    3
                });
            match version {
                1 => match (username, password) {
                    (Some(user), Some(key)) if user.contains(':') => Some(Auth::V1 {
                        url: trimmed,
                        user,
                        key,
                    }),
                    (user, key) => {
                        problems.push(ConfigProblem {
                            span: auth_url_span,
                            key: "store.swift".into(),
                            message: if user.as_ref().is_some_and(|u| !u.contains(':')) {
                                "v1 auth needs username = \"ACCOUNT:USER\"".into()
                            } else if key.is_none() {
                                "v1 auth needs a password (the user's key)".into()
                            } else {
                                "v1 auth needs a username".into()
                            },
                            fix: "set username = \"ACCOUNT:USER\" and password (literal, \"file:PATH\" or \"env:VAR\")".into(),
                        });
                        None
                    }
                },
                3 => {
                    let url = if trimmed.ends_with("/v3") {
                        trimmed
                    } else {
                        format!("{trimmed}/v3")
                    };
                    let app = app_id.is_some()
                        || c.application_credential_secret.is_some()
                        || from
                            .get("OS_AUTH_TYPE")
                            .is_some_and(|t| t.contains("applicationcredential"));
                    if app {
                        match (app_id, app_secret) {
                            (Some(id), Some(secret)) => {
                                Some(Auth::V3AppCredential { url, id, secret })
                            }
                            _ => {
                                problems.push(ConfigProblem {
                                    span: span(None),
                                    key: "store.swift".into(),
                                    message: "an application credential needs both its id and its secret".into(),
                                    fix: "set application_credential_id and application_credential_secret (or OS_APPLICATION_CREDENTIAL_ID/_SECRET)".into(),
                                });
                                None
                            }
                        }
                    } else {
                        let project = match (
                            pick(&c.project_id, &["OS_PROJECT_ID", "OS_TENANT_ID"]),
                            pick(&c.project_name, &["OS_PROJECT_NAME", "OS_TENANT_NAME"]),
                        ) {
                            (Some(id), _) => Some(Project::Id(id)),
                            (None, Some(name)) => Some(Project::Name {
                                name,
                                domain: pick(&c.project_domain_name, &["OS_PROJECT_DOMAIN_NAME"])
                                    .unwrap_or_else(|| "Default".into()),
                            }),
                            (None, None) => None,
                        };
                        match (username, password, project) {
                            (Some(user), Some(password), Some(project)) => Some(Auth::V3Password {
                                url,
                                user,
                                user_domain: pick(&c.user_domain_name, &["OS_USER_DOMAIN_NAME"])
                                    .unwrap_or_else(|| "Default".into()),
                                password,
                                project,
                            }),
                            (user, password, project) => {
                                let missing: Vec<&str> = [
                                    user.is_none().then_some("username"),
                                    password.is_none().then_some("password"),
                                    project.is_none().then_some("project_name (or project_id)"),
                                ]
                                .into_iter()
                                .flatten()
                                .collect();
                                problems.push(ConfigProblem {
                                    span: span(None),
                                    key: "store.swift".into(),
                                    message: format!(
                                        "Keystone v3 needs {} (not in [store.swift] nor in {source})",
                                        missing.join(", ")
                                    ),
                                    fix: "set them in [store.swift], or use an application credential (application_credential_id and _secret)".into(),
                                });
                                None
                            }
                        }
                    }
                }
                v => {
                    problems.push(ConfigProblem {
                        span: span(c.auth_version.as_ref().map(|v| v.span())),
                        key: "store.swift.auth_version".into(),
                        message: format!("identity API version {v} is not supported"),
                        fix: "use Keystone v3 (auth_version = 3) or v1 auth (auth_version = 1)"
                            .into(),
                    });
                    None
                }
            }
        }
    };

    let segment_size = super::size_mib(c.segment_size_mib.as_ref(), SEGMENT_SIZE, &mut problems);
    let timeout = super::timeout(c.timeout.as_ref(), "store.swift.timeout", &mut problems);
    let delete_after = c.delete_after.as_ref().and_then(|d| {
        let mut ages = [None; 3];
        let mut ok = true;
        for (k, v) in d.get_ref() {
            let slot = match k.as_str() {
                "daily" => 0,
                "weekly" => 1,
                "monthly" => 2,
                _ => {
                    ok = false;
                    push(
                        &mut problems,
                        Some(d.span()),
                        "store.swift.delete_after",
                        format!("unknown tier `{k}`"),
                        "use the tiers daily, weekly and monthly",
                    );
                    continue;
                }
            };
            match humantime::parse_duration(v) {
                Ok(a) if a < Duration::from_secs(86_400) => {
                    ok = false;
                    push(
                        &mut problems,
                        Some(d.span()),
                        "store.swift.delete_after",
                        format!("{k} = {v:?} is less than a day"),
                        "give each tier at least a day, well beyond what the retention keeps",
                    );
                }
                Ok(a) => ages[slot] = Some(a),
                Err(e) => {
                    ok = false;
                    push(
                        &mut problems,
                        Some(d.span()),
                        "store.swift.delete_after",
                        format!("invalid duration {v:?} for {k}: {e}"),
                        "write durations such as \"10d\", \"6w\" or \"400d\"",
                    );
                }
            }
        }
        match ages {
            [Some(a), Some(b), Some(c)] if ok => Some([a, b, c]),
            _ if !ok => None,
            _ => {
                push(
                    &mut problems,
                    Some(d.span()),
                    "store.swift.delete_after",
                    "delete_after needs an age for each of daily, weekly and monthly".into(),
                    "write delete_after = { daily = \"10d\", weekly = \"6w\", monthly = \"400d\" }",
                );
                None
            }
        }
    });
    Resolved::unless(problems, warnings, || SwiftOptions {
        container: container.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        auth: auth.expect("no problems means an auth"),
        region: pick(&c.region, &["OS_REGION_NAME"]),
        interface: pick(&c.interface, &["OS_INTERFACE"])
            .map(|i| i.trim_end_matches("URL").to_lowercase())
            .unwrap_or_else(|| "public".into()),
        segment_size,
        timeout,
        max_attempts: c.max_attempts.unwrap_or(5).max(1),
        delete_after,
    })
}

/// The size of segment `n` (0-based): doubles every 100 segments, up to
/// 1 GiB.
pub fn segment_size(first: usize, n: usize) -> usize {
    let doublings = (n / 100).min(20) as u32;
    first
        .saturating_mul(1usize << doublings)
        .min(MAX_SEGMENT.max(first))
}

/// Percent-encodes an object or container name for a url path (slashes
/// stay: Swift names are flat, and `/` is an ordinary character in them).
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Same, for a query parameter's value.
fn encode_query(value: &str) -> String {
    encode(value).replace('/', "%2F")
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// A logged-in session: the token and where the account's objects are.
struct Session {
    token: Secret,
    storage_url: String,
}

/// What a request failed with, before it is a [`StoreError`].
enum Failure {
    /// Could not talk to the server (after the retries).
    Network(String),
    /// Logging in failed; the message says why and what to do.
    Auth(String),
}

struct Inner {
    client: reqwest::Client,
    opts: SwiftOptions,
    session: Mutex<Option<Arc<Session>>>,
}

pub struct SwiftStore {
    rt: Runtime,
    inner: Arc<Inner>,
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
}

fn network_message(e: &reqwest::Error, timeout: Duration, url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url);
    if e.is_timeout() {
        format!("{host} did not answer within {timeout:?}; the server is down or overloaded")
    } else if e.is_connect() {
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        format!("cannot reach {host}: {cause}; check the url and the network")
    } else {
        format!("the connection to {host} failed: {e}")
    }
}

impl Inner {
    fn object(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    fn location(&self) -> String {
        let host = self
            .opts
            .auth
            .url()
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        if self.opts.prefix.is_empty() {
            format!("swift://{} at {host}", self.opts.container)
        } else {
            format!(
                "swift://{}/{} at {host}",
                self.opts.container, self.opts.prefix
            )
        }
    }

    fn url(&self, s: &Session, object: &str) -> String {
        format!(
            "{}/{}/{}",
            s.storage_url,
            encode(&self.opts.container),
            encode(object)
        )
    }

    fn container_url(&self, s: &Session) -> String {
        format!("{}/{}", s.storage_url, encode(&self.opts.container))
    }

    fn remote(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Remote {
            op,
            store: self.location(),
            key: key.to_string(),
            message,
        }
    }

    fn failed(&self, op: &'static str, key: &str, f: Failure) -> StoreError {
        match f {
            Failure::Network(m) | Failure::Auth(m) => self.remote(op, key, m),
        }
    }

    /// What an unexpected status means, in one line.
    fn explain(&self, status: reqwest::StatusCode, body: &str) -> String {
        let body = body.trim();
        let said = if body.is_empty() || body.starts_with('<') {
            String::new()
        } else {
            format!(": {}", body.chars().take(200).collect::<String>())
        };
        match status.as_u16() {
            404 => format!(
                "container `{}` does not exist; create it (`swift post {}`) or fix the url",
                self.opts.container, self.opts.container
            ),
            401 | 403 => format!(
                "access denied ({status}): the user needs read and write access to container `{}`",
                self.opts.container
            ),
            413 => format!("the object is too large for this Swift ({status}){said}; lower segment_size_mib"),
            422 => "the server stored different bytes than were sent (ETag mismatch); the network or a proxy corrupts data".into(),
            507 => "the Swift cluster is out of space (507)".into(),
            _ => format!("Swift answered {status}{said}"),
        }
    }

    async fn session(&self) -> Result<Arc<Session>, Failure> {
        if let Some(s) = self.session.lock().unwrap().clone() {
            return Ok(s);
        }
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        let s = loop {
            match self.login().await {
                Ok(s) => break Arc::new(s),
                Err(Failure::Network(m)) if attempt < self.opts.max_attempts => {
                    tracing::debug!("logging in to Swift (attempt {attempt}): {m}");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(20));
                }
                Err(e) => return Err(e),
            }
        };
        *self.session.lock().unwrap() = Some(s.clone());
        Ok(s)
    }

    async fn login(&self) -> Result<Session, Failure> {
        let url = self.opts.auth.url().to_string();
        let net =
            |e: reqwest::Error| Failure::Network(network_message(&e, self.opts.timeout, &url));
        match &self.opts.auth {
            Auth::V1 { url, user, key } => {
                let r = self
                    .client
                    .get(url)
                    .header("X-Auth-User", user)
                    .header("X-Auth-Key", key.expose())
                    .timeout(self.opts.timeout)
                    .send()
                    .await
                    .map_err(net)?;
                let status = r.status();
                if status.as_u16() == 401 || status.as_u16() == 403 {
                    return Err(Failure::Auth(format!(
                        "the auth service at {url} refused the credentials ({status}): wrong username or password"
                    )));
                }
                if retryable(status) {
                    return Err(Failure::Network(format!(
                        "the auth service at {url} answered {status}"
                    )));
                }
                let h = |n: &str| {
                    r.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                match (h("X-Auth-Token"), h("X-Storage-Url")) {
                    (Some(token), Some(storage_url)) if status.is_success() => Ok(Session {
                        token: Secret::new(token),
                        storage_url: storage_url.trim_end_matches('/').to_string(),
                    }),
                    _ => Err(Failure::Auth(format!(
                        "{url} answered {status} without a token: is it a v1 auth url (…/auth/v1.0)?"
                    ))),
                }
            }
            Auth::V3Password { .. } | Auth::V3AppCredential { .. } => self.login_v3().await,
        }
    }

    async fn login_v3(&self) -> Result<Session, Failure> {
        let url = self.opts.auth.url().to_string();
        let body = match &self.opts.auth {
            Auth::V3Password {
                user,
                user_domain,
                password,
                project,
                ..
            } => {
                let project = match project {
                    Project::Id(id) => serde_json::json!({ "id": id }),
                    Project::Name { name, domain } => {
                        serde_json::json!({ "name": name, "domain": { "name": domain } })
                    }
                };
                serde_json::json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": {
                        "name": user, "domain": { "name": user_domain }, "password": password.expose() } } },
                    "scope": { "project": project } } })
            }
            Auth::V3AppCredential { id, secret, .. } => serde_json::json!({ "auth": {
                "identity": { "methods": ["application_credential"],
                    "application_credential": { "id": id, "secret": secret.expose() } } } }),
            Auth::V1 { .. } => unreachable!("v1 logs in elsewhere"),
        };
        let r = self
            .client
            .post(format!("{url}/auth/tokens"))
            .json(&body)
            .timeout(self.opts.timeout)
            .send()
            .await
            .map_err(|e| Failure::Network(network_message(&e, self.opts.timeout, &url)))?;
        let status = r.status();
        if status.as_u16() == 401 {
            return Err(Failure::Auth(format!(
                "Keystone at {url} refused the credentials (401): wrong username, password, domain or application credential"
            )));
        }
        if retryable(status) {
            return Err(Failure::Network(format!(
                "Keystone at {url} answered {status}"
            )));
        }
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            return Err(Failure::Auth(format!(
                "Keystone at {url} answered {status}: {}; check project_name/project_id and the domains",
                text.chars().take(200).collect::<String>()
            )));
        }
        let token = r
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| Failure::Auth(format!("Keystone at {url} gave no X-Subject-Token")))?;
        let doc: serde_json::Value = r.json().await.map_err(|e| {
            Failure::Auth(format!(
                "Keystone at {url} answered something other than a token: {e}"
            ))
        })?;
        let storage_url = catalog_endpoint(&doc, self.opts.region.as_deref(), &self.opts.interface)
            .map_err(Failure::Auth)?;
        Ok(Session {
            token: Secret::new(token),
            storage_url,
        })
    }

    /// Sends a request built by `make` (called again for each attempt),
    /// with retries and backoff on network errors and 408/429/5xx, and a
    /// new token once on 401. Other statuses are the caller's to judge.
    async fn send<F>(&self, make: F) -> Result<reqwest::Response, Failure>
    where
        F: Fn(&Session) -> reqwest::RequestBuilder,
    {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        let mut renewed = false;
        loop {
            let session = self.session().await?;
            let r = make(&session)
                .header("X-Auth-Token", session.token.expose())
                .send()
                .await;
            let again = match r {
                Ok(r) if r.status().as_u16() == 401 && !renewed => {
                    // The token expired (or was revoked): log in again, once.
                    renewed = true;
                    self.session.lock().unwrap().take();
                    continue;
                }
                Ok(r) if retryable(r.status()) => {
                    if attempt >= self.opts.max_attempts {
                        return Ok(r);
                    }
                    format!("{}", r.status())
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    let m = network_message(&e, self.opts.timeout, &session.storage_url);
                    if attempt >= self.opts.max_attempts {
                        return Err(Failure::Network(m));
                    }
                    m
                }
            };
            tracing::debug!("Swift request failed (attempt {attempt}): {again}; retrying");
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(20));
        }
    }

    async fn put_object(
        &self,
        object: &str,
        body: bytes::Bytes,
        delete_at: Option<i64>,
    ) -> Result<reqwest::Response, Failure> {
        let etag = md5_hex(&body);
        self.send(|s| {
            let mut rq = self
                .client
                .put(self.url(s, object))
                .header("ETag", &etag)
                .header("If-None-Match", "*")
                .header("Content-Type", "application/octet-stream")
                .timeout(self.opts.timeout)
                .body(body.clone());
            if let Some(t) = delete_at {
                rq = rq.header("X-Delete-At", t.to_string());
            }
            rq
        })
        .await
    }

    /// Uploads one segment; returns its manifest entry.
    async fn put_segment(
        &self,
        key: &str,
        object: String,
        body: bytes::Bytes,
        delete_at: Option<i64>,
    ) -> Result<serde_json::Value, StoreError> {
        let etag = md5_hex(&body);
        let size = body.len();
        let r = self
            .put_object(&object, body, delete_at)
            .await
            .map_err(|f| self.failed("upload a segment of", key, f))?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            return Err(self.remote("upload a segment of", key, self.explain(status, &text)));
        }
        // Swift answers with the MD5 it computed over what it stored.
        let stored = r
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(|e| e.trim_matches('"').to_string());
        if stored.as_deref().is_some_and(|e| e != etag) {
            return Err(self.remote(
                "upload a segment of",
                key,
                format!("the server stored a segment with ETag {stored:?}, not {etag}; the network or a proxy corrupts data"),
            ));
        }
        Ok(serde_json::json!({
            "path": format!("/{}/{}", self.opts.container, object),
            "etag": etag,
            "size_bytes": size,
        }))
    }

    /// Deletes one plain object; a missing one is fine.
    async fn delete_plain(&self, object: &str) -> Result<(), Failure> {
        let r = self
            .send(|s| {
                self.client
                    .delete(self.url(s, object))
                    .timeout(self.opts.timeout)
            })
            .await?;
        let status = r.status();
        if status.is_success() || status.as_u16() == 404 {
            Ok(())
        } else {
            Err(Failure::Network(self.explain(status, "")))
        }
    }

    /// Deletes the segments of a failed upload, retrying with backoff
    /// (about a minute with the default 5 attempts): the server may be
    /// what failed.
    async fn delete_segments(&self, key: &str, objects: &[String]) {
        for object in objects {
            let mut delay = Duration::from_millis(500);
            let mut done = false;
            for attempt in 1..=self.opts.max_attempts + 3 {
                match self.delete_plain(object).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(Failure::Network(m) | Failure::Auth(m)) => {
                        tracing::warn!("deleting a segment of {key} (attempt {attempt}): {m}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(15));
                    }
                }
            }
            if !done {
                tracing::error!(
                    "could not delete the segments of the failed upload of {key}; `cellar prune` removes them once they are a day old"
                );
                return;
            }
        }
    }

    /// One page of the container listing, names starting with `prefix`,
    /// after `marker`.
    async fn list_page(
        &self,
        prefix: &str,
        marker: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let query = format!(
            "?format=json&limit=1000&prefix={}&marker={}",
            encode_query(prefix),
            encode_query(marker)
        );
        let r = self
            .send(|s| {
                self.client
                    .get(format!("{}{query}", self.container_url(s)))
                    .header("Accept", "application/json")
                    .timeout(self.opts.timeout)
            })
            .await
            .map_err(|f| self.failed("list", prefix, f))?;
        let status = r.status();
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            return Err(self.remote("list", prefix, self.explain(status, &text)));
        }
        if status.as_u16() == 204 {
            return Ok(Vec::new());
        }
        r.json()
            .await
            .map_err(|e| self.remote("list", prefix, format!("the listing is not JSON: {e}")))
    }

    /// Every object whose full name starts with `prefix`, in name order.
    async fn list_all(&self, prefix: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let page = self.list_page(prefix, &marker).await?;
            let Some(last) = page.last().and_then(|o| o["name"].as_str()) else {
                break;
            };
            marker = last.to_string();
            out.extend(page);
        }
        Ok(out)
    }

    /// The segment names an SLO manifest refers to; None when `object` is
    /// not an SLO (or is missing).
    async fn manifest_segments(&self, object: &str) -> Result<Option<Vec<String>>, Failure> {
        let r = self
            .send(|s| {
                self.client
                    .get(format!(
                        "{}?multipart-manifest=get&format=raw",
                        self.url(s, object)
                    ))
                    .timeout(self.opts.timeout)
            })
            .await?;
        let slo = r
            .headers()
            .get("X-Static-Large-Object")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if !r.status().is_success() || !slo {
            return Ok(None);
        }
        let doc: serde_json::Value = r.json().await.map_err(|e| {
            Failure::Network(format!("the SLO manifest of {object} is not JSON: {e}"))
        })?;
        let container = format!("/{}/", self.opts.container);
        Ok(Some(
            doc.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["path"].as_str().or(s["name"].as_str()))
                .map(|p| p.strip_prefix(&container).unwrap_or(p).to_string())
                .collect(),
        ))
    }
}

/// The object-store endpoint of a Keystone v3 token's catalog for the
/// region and interface, or a one-line explanation.
pub fn catalog_endpoint(
    doc: &serde_json::Value,
    region: Option<&str>,
    interface: &str,
) -> Result<String, String> {
    let services = doc["token"]["catalog"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(swift) = services.iter().find(|s| s["type"] == "object-store") else {
        return Err("the Keystone catalog has no object-store service: this cloud has no Swift, or the project cannot use it".into());
    };
    let endpoints = swift["endpoints"].as_array().cloned().unwrap_or_default();
    let of_interface: Vec<&serde_json::Value> = endpoints
        .iter()
        .filter(|e| e["interface"] == interface)
        .collect();
    let region_of = |e: &serde_json::Value| {
        e["region_id"]
            .as_str()
            .or(e["region"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let found = of_interface
        .iter()
        .find(|e| region.is_none_or(|r| region_of(e) == r));
    match found {
        Some(e) => Ok(e["url"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string()),
        None => {
            let mut regions: Vec<String> = of_interface.iter().map(|e| region_of(e)).collect();
            regions.dedup();
            Err(format!(
                "wrong region: the catalog has no {interface} object-store endpoint in region `{}`; it has {}; set `region` in [store.swift]",
                region.unwrap_or(""),
                if regions.is_empty() {
                    "none".to_string()
                } else {
                    regions.join(", ")
                }
            ))
        }
    }
}

/// Fills `buf` from `r` up to its length; returns the bytes read (less
/// only at the end of the stream).
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The backup time in a key `<profile>/<id>.<rest>`.
fn backup_time(key: &str) -> Option<DateTime<Utc>> {
    let name = key.rsplit('/').next()?;
    let id = name.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

impl SwiftStore {
    pub fn open(opts: SwiftOptions) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unsupported(format!("cannot start the Swift client runtime: {e}"))
            })?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(opts.timeout)
            .user_agent(concat!("cellar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Unsupported(format!("cannot build the HTTP client: {e}")))?;
        Ok(SwiftStore {
            rt,
            inner: Arc::new(Inner {
                client,
                opts,
                session: Mutex::new(None),
            }),
        })
    }

    /// When a new object expires under `delete_after`: the daily age. Pin
    /// markers never expire (prune re-sets the backups' own expiry).
    fn new_delete_at(&self, key: &str) -> Option<i64> {
        if key.ends_with(crate::pin::PIN_SUFFIX) {
            return None;
        }
        self.inner.opts.delete_after.map(|[daily, _, _]| {
            (Utc::now() + chrono::Duration::from_std(daily).unwrap_or_default()).timestamp()
        })
    }

    fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let len = bytes.len() as u64;
        let object = inner.object(key);
        let r = self
            .rt
            .block_on(inner.put_object(&object, bytes.into(), self.new_delete_at(key)))
            .map_err(|f| inner.failed("upload", key, f))?;
        match r.status().as_u16() {
            201 | 200 => Ok(len),
            412 => Err(StoreError::Exists {
                store: self.location(),
                key: key.to_string(),
            }),
            _ => {
                let status = r.status();
                let text = self.rt.block_on(r.text()).unwrap_or_default();
                Err(inner.remote("upload", key, inner.explain(status, &text)))
            }
        }
    }

    fn put_large(&self, key: &str, data: &mut dyn Read, first: Vec<u8>) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let upload = format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        );
        let base = inner.object(&format!("{SEGMENTS}/{key}/{upload}"));
        let delete_at = self.new_delete_at(key);
        let mut written: Vec<String> = Vec::new();
        let result = (|| -> Result<u64, StoreError> {
            let mut entries = Vec::new();
            let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<_>> =
                std::collections::VecDeque::new();
            let mut total = 0u64;
            let mut chunk = first;
            let mut n = 0usize;
            loop {
                total += chunk.len() as u64;
                let object = format!("{base}/{n:08}");
                written.push(object.clone());
                let inner2 = self.inner.clone();
                let key2 = key.to_string();
                let body = bytes::Bytes::from(std::mem::take(&mut chunk));
                in_flight.push_back(self.rt.spawn(async move {
                    inner2.put_segment(&key2, object, body, delete_at).await
                }));
                // Two segments in flight: one uploading while the next is read.
                while in_flight.len() >= 2 {
                    let h = in_flight.pop_front().unwrap();
                    entries.push(self.join(key, h)?);
                }
                if crate::cancel::requested() {
                    return Err(StoreError::Io {
                        op: "upload",
                        store: self.location(),
                        key: key.to_string(),
                        cause: crate::cancel::interrupted(),
                    });
                }
                n += 1;
                let size = segment_size(inner.opts.segment_size, n);
                chunk = vec![0u8; size];
                let len = fill(data, &mut chunk).map_err(|cause| StoreError::Io {
                    op: "read data for",
                    store: self.location(),
                    key: key.to_string(),
                    cause,
                })?;
                if len == 0 {
                    break;
                }
                chunk.truncate(len);
                if n >= MAX_SEGMENTS {
                    return Err(StoreError::Unsupported(format!(
                        "{key}: more than {MAX_SEGMENTS} segments; raise segment_size_mib in [store.swift]"
                    )));
                }
            }
            while let Some(h) = in_flight.pop_front() {
                entries.push(self.join(key, h)?);
            }
            // The manifest last: only now does the key exist.
            let manifest = bytes::Bytes::from(serde_json::to_vec(&entries).expect("json"));
            let object = inner.object(key);
            let r = self
                .rt
                .block_on(inner.send(|s| {
                    let mut rq = inner
                        .client
                        .put(format!("{}?multipart-manifest=put", inner.url(s, &object)))
                        .header("If-None-Match", "*")
                        .header("Content-Type", "application/octet-stream")
                        .timeout(inner.opts.timeout.max(Duration::from_secs(300)))
                        .body(manifest.clone());
                    if let Some(t) = delete_at {
                        rq = rq.header("X-Delete-At", t.to_string());
                    }
                    rq
                }))
                .map_err(|f| inner.failed("write the manifest of", key, f))?;
            match r.status().as_u16() {
                200 | 201 => Ok(total),
                412 => Err(StoreError::Exists {
                    store: self.location(),
                    key: key.to_string(),
                }),
                _ => {
                    let status = r.status();
                    let text = self.rt.block_on(r.text()).unwrap_or_default();
                    Err(inner.remote(
                        "write the SLO manifest of",
                        key,
                        inner.explain(status, &text),
                    ))
                }
            }
        })();
        if result.is_err() {
            self.rt.block_on(inner.delete_segments(key, &written));
        }
        result
    }

    fn join(
        &self,
        key: &str,
        h: tokio::task::JoinHandle<Result<serde_json::Value, StoreError>>,
    ) -> Result<serde_json::Value, StoreError> {
        self.rt
            .block_on(h)
            .map_err(|e| StoreError::Unsupported(format!("upload task for {key} failed: {e}")))?
    }

    /// Sets or clears `X-Delete-At` on an object (and an SLO's segments).
    fn set_delete_at(&self, key: &str, at: Option<i64>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let object = inner.object(key);
        let segments = self
            .rt
            .block_on(inner.manifest_segments(&object))
            .map_err(|f| inner.failed("inspect", key, f))?
            .unwrap_or_default();
        for o in segments.iter().chain(std::iter::once(&object)) {
            let r = self
                .rt
                .block_on(inner.send(|s| {
                    let rq = inner
                        .client
                        .post(inner.url(s, o))
                        .timeout(inner.opts.timeout);
                    match at {
                        Some(t) => rq.header("X-Delete-At", t.to_string()),
                        None => rq.header("X-Remove-Delete-At", "1"),
                    }
                }))
                .map_err(|f| inner.failed("set the expiry of", key, f))?;
            if !r.status().is_success() {
                let status = r.status();
                return Err(inner.remote("set the expiry of", key, inner.explain(status, "")));
            }
        }
        Ok(())
    }
}

impl Store for SwiftStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        let inner = &self.inner;
        // Never replace an object: If-None-Match on every write, and a HEAD
        // first so a large upload does not send its segments for nothing.
        let object = inner.object(key);
        let head = self
            .rt
            .block_on(inner.send(|s| {
                inner
                    .client
                    .head(inner.url(s, &object))
                    .timeout(inner.opts.timeout)
            }))
            .map_err(|f| inner.failed("upload", key, f))?;
        match head.status().as_u16() {
            404 => {}
            s if (200..300).contains(&s) => {
                return Err(StoreError::Exists {
                    store: self.location(),
                    key: key.to_string(),
                })
            }
            _ => return Err(inner.remote("upload", key, inner.explain(head.status(), ""))),
        }
        let first = inner.opts.segment_size;
        let mut buf = vec![0u8; first];
        let n = fill(data, &mut buf).map_err(|cause| StoreError::Io {
            op: "read data for",
            store: self.location(),
            key: key.to_string(),
            cause,
        })?;
        buf.truncate(n);
        if n < first {
            return self.put_small(key, buf);
        }
        self.put_large(key, data, buf)
    }

    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        let inner = self.inner.clone();
        let object = inner.object(key);
        let r = self
            .rt
            .block_on(inner.send(|s| inner.client.get(inner.url(s, &object))))
            .map_err(|f| inner.failed("download", key, f))?;
        match r.status().as_u16() {
            200 => {}
            404 => {
                return Err(StoreError::NotFound {
                    store: self.location(),
                    key: key.to_string(),
                })
            }
            _ => {
                let status = r.status();
                let text = self.rt.block_on(r.text()).unwrap_or_default();
                return Err(inner.remote("download", key, inner.explain(status, &text)));
            }
        }
        let (tx, reader) = super::bridge::channel();
        self.rt.spawn(async move {
            let mut r = r;
            let mut offset: u64 = 0;
            let mut retries = 0u64;
            loop {
                match r.chunk().await {
                    Ok(None) => return,
                    Ok(Some(bytes)) => {
                        offset += bytes.len() as u64;
                        if tx.send(Ok(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if retries < 3 => {
                        // Resume where the stream broke.
                        retries += 1;
                        tracing::warn!(
                            "download of {object} broke at byte {offset} ({e}); resuming"
                        );
                        tokio::time::sleep(Duration::from_secs(retries)).await;
                        let next = inner
                            .send(|s| {
                                inner
                                    .client
                                    .get(inner.url(s, &object))
                                    .header("Range", format!("bytes={offset}-"))
                            })
                            .await;
                        match next {
                            Ok(n) if n.status().as_u16() == 206 => r = n,
                            Ok(n) => {
                                let m = format!("resuming the download answered {}", n.status());
                                let _ = tx.send(Err(io::Error::other(m))).await;
                                return;
                            }
                            Err(Failure::Network(m) | Failure::Auth(m)) => {
                                let _ = tx.send(Err(io::Error::other(m))).await;
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::other(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::new(reader))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let inner = &self.inner;
        let full = inner.object(prefix);
        let strip = if inner.opts.prefix.is_empty() {
            0
        } else {
            inner.opts.prefix.len() + 1
        };
        let objects = self.rt.block_on(inner.list_all(&full))?;
        let mut out = Vec::new();
        for o in objects {
            let Some(name) = o["name"].as_str() else {
                continue;
            };
            let Some(key) = name.get(strip..) else {
                continue;
            };
            if key.starts_with(&format!("{SEGMENTS}/")) {
                continue;
            }
            out.push(ObjectInfo {
                key: key.to_string(),
                size: o["bytes"].as_u64().unwrap_or(0),
                modified: o["last_modified"].as_str().and_then(|t| {
                    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                        .ok()
                        .map(|t| t.and_utc())
                }),
                md5: o["hash"].as_str().and_then(super::md5_hex),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let inner = &self.inner;
        let object = inner.object(key);
        // An SLO goes with its segments; a plain object is refused by
        // multipart-manifest=delete ("Not an SLO manifest") and deleted
        // as such.
        let r = self
            .rt
            .block_on(inner.send(|s| {
                inner
                    .client
                    .delete(format!(
                        "{}?multipart-manifest=delete",
                        inner.url(s, &object)
                    ))
                    .header("Accept", "application/json")
                    .timeout(inner.opts.timeout.max(Duration::from_secs(300)))
            }))
            .map_err(|f| inner.failed("delete", key, f))?;
        let status = r.status();
        if status.as_u16() == 404 {
            return Ok(());
        }
        let text = self.rt.block_on(r.text()).unwrap_or_default();
        if !status.is_success() {
            return Err(inner.remote("delete", key, inner.explain(status, &text)));
        }
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let answer = doc["Response Status"].as_str().unwrap_or("200 OK");
        if answer.starts_with('2') {
            return Ok(());
        }
        let not_slo = doc["Errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e.to_string().contains("Not an SLO manifest"));
        if not_slo {
            return self
                .rt
                .block_on(inner.delete_plain(&object))
                .map_err(|f| inner.failed("delete", key, f));
        }
        Err(inner.remote(
            "delete",
            key,
            format!("Swift answered {answer}: {}", doc["Errors"]),
        ))
    }

    fn set_tier(&self, key: &str, tier: &str) -> Result<(), StoreError> {
        let Some([daily, weekly, monthly]) = self.inner.opts.delete_after else {
            return Ok(());
        };
        let age = match tier {
            "daily" => Some(daily),
            "weekly" => Some(weekly),
            "monthly" => Some(monthly),
            // Pinned and other kept-for-a-reason backups never expire.
            _ => None,
        };
        let at = match (age, backup_time(key)) {
            (Some(age), Some(t)) => {
                let at = t + chrono::Duration::from_std(age).unwrap_or_default();
                // Never sooner than a day after a prune that keeps it.
                Some(at.max(Utc::now() + chrono::Duration::days(1)).timestamp())
            }
            _ => None,
        };
        self.set_delete_at(key, at)
    }

    fn sweep(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        // Segments of uploads that a killed backup never finished: grouped
        // by upload, and removed when the newest is old enough and no
        // manifest under their key refers to them.
        let inner = &self.inner;
        let root = inner.object(&format!("{SEGMENTS}/"));
        let segments = self
            .rt
            .block_on(inner.list_all(&format!("{root}{prefix}")))?;
        let mut uploads: BTreeMap<String, (Vec<String>, Option<DateTime<Utc>>)> = BTreeMap::new();
        for o in &segments {
            let Some(name) = o["name"].as_str() else {
                continue;
            };
            let Some((upload, _n)) = name.rsplit_once('/') else {
                continue;
            };
            let modified = o["last_modified"].as_str().and_then(|t| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|t| t.and_utc())
            });
            let e = uploads.entry(upload.to_string()).or_default();
            e.0.push(name.to_string());
            e.1 = e.1.max(modified);
        }
        let mut out = Vec::new();
        for (upload, (names, newest)) in uploads {
            if newest.is_none_or(|t| t >= older_than) {
                continue;
            }
            let Some((key, _)) = upload
                .strip_prefix(&root)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            let used = self
                .rt
                .block_on(inner.manifest_segments(&inner.object(key)))
                .map_err(|f| inner.failed("inspect", key, f))?
                .is_some_and(|segs| segs.iter().any(|s| s.starts_with(&format!("{upload}/"))));
            if used {
                continue;
            }
            if !dry_run {
                for n in &names {
                    self.rt
                        .block_on(inner.delete_plain(n))
                        .map_err(|f| inner.failed("delete a leftover segment of", key, f))?;
                }
            }
            out.push(format!(
                "{} segment(s) of an unfinished upload of {key} ({})",
                names.len(),
                upload.rsplit('/').next().unwrap_or("")
            ));
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let r = self
            .rt
            .block_on(inner.send(|s| {
                inner
                    .client
                    .head(inner.container_url(s))
                    .timeout(inner.opts.timeout)
            }))
            .map_err(|f| inner.failed("reach", "the container", f))?;
        let status = r.status();
        if !status.is_success() {
            return Err(inner.remote("reach", "the container", inner.explain(status, "")));
        }
        // Then prove write, read and delete with a probe object.
        super::probe(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spanned(s: &str) -> Spanned<String> {
        // Spans only matter for messages; any will do here.
        toml::from_str::<BTreeMap<String, Spanned<String>>>(&format!("v = {s:?}"))
            .unwrap()
            .remove("v")
            .unwrap()
    }

    fn config(text: &str) -> Spanned<SwiftConfig> {
        #[derive(Deserialize)]
        struct T {
            swift: Spanned<SwiftConfig>,
        }
        toml::from_str::<T>(&format!("[swift]\n{text}"))
            .unwrap()
            .swift
    }

    #[test]
    fn rc_files_are_read_without_running_them() {
        let rc = r#"#!/usr/bin/env bash
export OS_AUTH_URL=https://keystone.example.com:5000/v3
export OS_PROJECT_NAME="shop"
export OS_USER_DOMAIN_NAME='Default'
unset OS_TENANT_ID
export OS_USERNAME="backup"
echo "Please enter your OpenStack Password for project $OS_PROJECT_NAME as user $OS_USERNAME: "
read -sr OS_PASSWORD_INPUT
export OS_PASSWORD=$OS_PASSWORD_INPUT
export OS_REGION_NAME="RegionTwo"
if [ -z "$OS_REGION_NAME" ]; then unset OS_REGION_NAME; fi
export OS_INTERFACE=public
"#;
        let m = parse_rc(rc);
        assert_eq!(m["OS_AUTH_URL"], "https://keystone.example.com:5000/v3");
        assert_eq!(m["OS_PROJECT_NAME"], "shop");
        assert_eq!(m["OS_USER_DOMAIN_NAME"], "Default");
        assert_eq!(m["OS_REGION_NAME"], "RegionTwo");
        assert!(!m.contains_key("OS_PASSWORD"));
        assert_eq!(m.len(), 6, "{m:?}");
    }

    #[test]
    fn rc_file_then_keys_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("openrc.sh"),
            "export OS_AUTH_URL=https://k:5000\nexport OS_USERNAME=u\nexport OS_PASSWORD='p w'\nexport OS_PROJECT_NAME=proj\nexport OS_REGION_NAME=R1\n",
        )
        .unwrap();
        let url = spanned("swift://backups/host1");
        let c = config("rc_file = \"openrc.sh\"\nregion = \"R2\"");
        let r = resolve_with(&url, Some(&c), dir.path(), &|_| None)
            .map_err(|p| format!("{p:?}"))
            .unwrap();
        let o = r.options;
        assert_eq!(
            (o.container.as_str(), o.prefix.as_str()),
            ("backups", "host1")
        );
        assert_eq!(o.region.as_deref(), Some("R2"));
        match o.auth {
            Auth::V3Password {
                url,
                user,
                user_domain,
                password,
                project: Project::Name { name, domain },
            } => {
                assert_eq!(url, "https://k:5000/v3");
                assert_eq!((user.as_str(), user_domain.as_str()), ("u", "Default"));
                assert_eq!(password.expose(), "p w");
                assert_eq!((name.as_str(), domain.as_str()), ("proj", "Default"));
            }
            a => panic!("{a:?}"),
        }

        // Nothing in the profile: the OS_* environment.
        let env = |k: &str| match k {
            "OS_AUTH_URL" => Some("http://127.0.0.1:8080/auth/v1.0".to_string()),
            "OS_USERNAME" => Some("test:tester".to_string()),
            "OS_PASSWORD" => Some("testing".to_string()),
            _ => None,
        };
        let o = resolve_with(&url, None, dir.path(), &env)
            .ok()
            .unwrap()
            .options;
        assert!(matches!(o.auth, Auth::V1 { ref user, .. } if user == "test:tester"));

        // Application credentials need no project.
        let c = config("auth_url = \"https://k/v3\"\napplication_credential_id = \"abc\"\napplication_credential_secret = \"env:CELLAR_TEST_SWIFT_APP\"");
        std::env::set_var("CELLAR_TEST_SWIFT_APP", "s3cret");
        let o = resolve_with(&url, Some(&c), dir.path(), &|_| None)
            .ok()
            .unwrap()
            .options;
        assert!(
            matches!(o.auth, Auth::V3AppCredential { ref id, ref secret, .. } if id == "abc" && secret.expose() == "s3cret")
        );
        assert!(!format!("{:?}", o.auth).contains("s3cret"));
    }

    #[test]
    fn missing_credentials_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = spanned("swift://c");
        let c = config("auth_url = \"https://k:5000/v3\"\nusername = \"u\"");
        let p = resolve_with(&url, Some(&c), dir.path(), &|_| None)
            .err()
            .unwrap();
        assert!(p[0].message.contains("password, project_name"), "{p:?}");
        let p = resolve_with(&url, None, dir.path(), &|_| None)
            .err()
            .unwrap();
        assert!(p[0].message.contains("no auth_url"), "{p:?}");
        let c = config("auth_url = \"http://k/auth/v1.0\"\nusername = \"u\"\npassword = \"p\"");
        let p = resolve_with(&url, Some(&c), dir.path(), &|_| None)
            .err()
            .unwrap();
        assert!(p[0].message.contains("ACCOUNT:USER"), "{p:?}");
    }

    #[test]
    fn catalog_picks_the_region_or_names_the_others() {
        let doc = serde_json::json!({"token": {"catalog": [
            {"type": "identity", "endpoints": []},
            {"type": "object-store", "endpoints": [
                {"interface": "public", "region_id": "R1", "url": "https://s1/v1/AUTH_p/"},
                {"interface": "internal", "region_id": "R1", "url": "http://i1/v1/AUTH_p"},
                {"interface": "public", "region_id": "R2", "url": "https://s2/v1/AUTH_p"}]}]}});
        assert_eq!(
            catalog_endpoint(&doc, Some("R2"), "public").unwrap(),
            "https://s2/v1/AUTH_p"
        );
        assert_eq!(
            catalog_endpoint(&doc, None, "public").unwrap(),
            "https://s1/v1/AUTH_p"
        );
        let e = catalog_endpoint(&doc, Some("R3"), "public").unwrap_err();
        assert!(e.contains("wrong region") && e.contains("R1, R2"), "{e}");
    }

    #[test]
    fn segments_grow_so_a_thousand_hold_hundreds_of_gigabytes() {
        let total: u128 = (0..MAX_SEGMENTS)
            .map(|n| segment_size(DEFAULT_SEGMENT_SIZE, n) as u128)
            .sum();
        assert!(total > 500 * 1000u128.pow(3), "{total}");
        assert_eq!(segment_size(MIB, 0), MIB);
        assert_eq!(segment_size(DEFAULT_SEGMENT_SIZE, 100), 32 * MIB);
    }

    #[test]
    fn names_are_encoded_for_urls() {
        assert_eq!(
            encode("p/20261121T020000Z.a b%.pgp"),
            "p/20261121T020000Z.a%20b%25.pgp"
        );
        assert_eq!(encode_query("a/b"), "a%2Fb");
        assert_eq!(
            backup_time("p/20261121T020000Z.tar.xz.pgp"),
            Some(
                chrono::DateTime::parse_from_rfc3339("2026-11-21T02:00:00Z")
                    .unwrap()
                    .into()
            )
        );
    }
}
