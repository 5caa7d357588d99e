//! A store in an S3-compatible bucket (`s3://bucket/prefix`): AWS, Wasabi,
//! DigitalOcean Spaces, MinIO, Garage, Ceph, Swift's S3 API.
//!
//! Uploads stream as multipart uploads with bounded memory: parts are read
//! from the pipeline one at a time (at most two in flight), starting at
//! `part_size` and doubling every 500 parts up to 1 GiB, so 10,000 parts
//! hold more than 5 TB. Every part and object carries its Content-MD5, which
//! buckets with object lock require and every server checks. The object
//! exists only once the upload is completed; a failed or interrupted upload
//! is aborted (retried with backoff, since the server may be the thing that
//! failed), so no orphan parts are billed; so are uploads of the same key
//! that a request without an answer made. Requests are retried with
//! backoff by the SDK's standard retry policy.
//!
//! Downloads stream; a download that breaks mid-way resumes with a ranged
//! GET from the byte it reached.

use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use base64::Engine;
use md5::{Digest, Md5};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::Runtime;

use toml::Spanned;

use super::{ConfigProblem, ObjectInfo, Reader, Resolved, Store, StoreError};
use crate::profile::raw::S3Config;
use crate::secret::{Secret, SecretError};

/// Everything the S3 store needs, resolved from `[store.s3]`.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub storage_class: Option<String>,
    pub server_side_encryption: Option<String>,
    /// (mode, days)
    pub object_lock: Option<(String, u32)>,
    pub tag_tiers: bool,
    pub request_headers: Vec<(String, String)>,
    /// First part size in bytes (at least 5 MiB).
    pub part_size: usize,
    /// Per-attempt timeout of one request.
    pub timeout: Duration,
    /// Attempts per request (the SDK retries with backoff in between).
    pub max_attempts: u32,
}

const MIB: usize = 1024 * 1024;
pub const DEFAULT_PART_SIZE: usize = 16 * MIB;
const MAX_PART: usize = 1024 * MIB;

/// `part_size_mib`, within S3's limits.
const PART_SIZE: super::SizeKey = (
    "store.s3.part_size_mib",
    "part size",
    "use 5 to 5120 (S3's limits); the default is 16",
    5,
    DEFAULT_PART_SIZE,
);

fn problem(
    problems: &mut Vec<ConfigProblem>,
    span: Range<usize>,
    key: &str,
    message: impl Into<String>,
    fix: &str,
) {
    problems.push(ConfigProblem {
        span: Some(span),
        key: key.to_string(),
        message: message.into(),
        fix: fix.to_string(),
    });
}

impl S3Options {
    /// Resolves `[store.s3]` (its defaults when absent) for the url
    /// `s3://bucket/prefix`. Secret files are relative to `base`, the
    /// config dir.
    pub fn resolve(
        url: &Spanned<String>,
        c: S3Config,
        base: &Path,
    ) -> Result<Resolved<S3Options>, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let rest = url.get_ref().trim_start_matches("s3://");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            problem(
                &mut problems,
                url.span(),
                "store.url",
                "the s3:// url names no bucket",
                "write s3://BUCKET/PREFIX",
            );
        }
        let mut secret = |spec: &Option<Spanned<String>>, key: &str| {
            let fix = SecretError::fix;
            super::secret(spec.as_ref()?, key, base, fix, &mut problems, &mut warnings)
        };
        let access_key_id = secret(&c.access_key_id, "store.s3.access_key_id");
        let secret_access_key = secret(&c.secret_access_key, "store.s3.secret_access_key");
        if c.access_key_id.is_some() != c.secret_access_key.is_some() {
            problem(
                &mut problems,
                url.span(),
                "store.s3",
                "only one of access_key_id and secret_access_key is set",
                "set both, or neither to use the standard AWS chain (environment, profile, instance role)",
            );
        }
        let object_lock = c.object_lock.map(|l| {
            let mode = l.get_ref().mode.to_uppercase();
            if mode != "GOVERNANCE" && mode != "COMPLIANCE" || l.get_ref().days == 0 {
                problem(
                    &mut problems,
                    l.span(),
                    "store.s3.object_lock",
                    format!(
                        "invalid object lock {{ mode = {:?}, days = {} }}",
                        l.get_ref().mode,
                        l.get_ref().days
                    ),
                    "use mode = \"GOVERNANCE\" or \"COMPLIANCE\" and days of at least 1",
                );
            }
            (mode, l.get_ref().days)
        });
        let sse = c.server_side_encryption.map(|s| {
            if !matches!(s.get_ref().as_str(), "AES256" | "aws:kms" | "aws:kms:dsse") {
                problem(
                    &mut problems,
                    s.span(),
                    "store.s3.server_side_encryption",
                    format!("unknown server-side encryption {:?}", s.get_ref()),
                    "use \"AES256\" or \"aws:kms\"",
                );
            }
            s.into_inner()
        });
        let part_size = super::size_mib(c.part_size_mib.as_ref(), PART_SIZE, &mut problems);
        let timeout = super::timeout(c.timeout.as_ref(), "store.s3.timeout", &mut problems);
        Resolved::unless(problems, warnings, || S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            region: c.region,
            endpoint: c.endpoint,
            path_style: c.path_style.unwrap_or(false),
            access_key_id,
            secret_access_key,
            storage_class: c.storage_class,
            server_side_encryption: sse,
            object_lock,
            tag_tiers: c.tag_tiers.unwrap_or(false),
            request_headers: c.request_headers.into_iter().collect(),
            part_size,
            timeout,
            max_attempts: c.max_attempts.unwrap_or(5),
        })
    }
}

/// The size of part `n` (0-based): doubles every 500 parts, up to 1 GiB.
pub fn part_size(first: usize, n: usize) -> usize {
    let doublings = (n / 500).min(20) as u32;
    first
        .saturating_mul(1usize << doublings)
        .min(MAX_PART)
        .max(first)
}

pub struct S3Store {
    rt: Runtime,
    client: Client,
    opts: S3Options,
    /// The server answered NotImplemented to `If-None-Match` on writes
    /// (Swift's S3 API): writes rely on the HEAD before them.
    no_conditional: AtomicBool,
    /// The server answered NotImplemented to object tagging (Swift's S3
    /// API): `tag_tiers` is skipped, and `check` says so.
    no_tagging: AtomicBool,
}

/// What a NotImplemented answer refused, from its message.
enum Missing {
    Conditional,
    Tagging,
}

fn not_implemented<E, R>(e: &SdkError<E, R>) -> Option<Missing>
where
    E: ProvideErrorMetadata,
{
    if e.code() != Some("NotImplemented") {
        return None;
    }
    let m = e.message().unwrap_or("").to_lowercase();
    if m.contains("conditional") {
        Some(Missing::Conditional)
    } else if m.contains("tagging") {
        Some(Missing::Tagging)
    } else {
        None
    }
}

impl S3Store {
    pub fn open(opts: S3Options) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unsupported(format!("cannot start the S3 client runtime: {e}"))
            })?;
        let client = rt.block_on(client(&opts));
        Ok(S3Store {
            rt,
            client,
            opts,
            no_conditional: AtomicBool::new(false),
            no_tagging: AtomicBool::new(false),
        })
    }

    fn object(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    fn fail<E, R>(&self, op: &'static str, key: &str, e: &SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        StoreError::Remote {
            op,
            store: self.location(),
            key: key.to_string(),
            message: explain(&self.opts, e),
        }
    }

    fn headers(
        &self,
    ) -> impl Fn(&mut aws_smithy_runtime_api::client::orchestrator::HttpRequest) + Send + Sync + 'static
    {
        let headers = self.opts.request_headers.clone();
        move |req| {
            for (k, v) in &headers {
                req.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }

    fn lock_until(&self) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        self.opts.object_lock.as_ref().map(|(mode, days)| {
            let until = chrono::Utc::now() + chrono::Duration::days(i64::from(*days));
            (
                ObjectLockMode::from(mode.to_uppercase().as_str()),
                aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()),
            )
        })
    }

    fn tagging(&self) -> Option<String> {
        // New backups start as the newest daily one; retention re-tags.
        (self.opts.tag_tiers && !self.no_tagging.load(Ordering::Relaxed))
            .then(|| "cellar-tier=daily".to_string())
    }

    /// Records what the server lacks, once, with a warning; true when
    /// the request is worth sending again without it.
    fn lacks(&self, missing: Option<Missing>) -> bool {
        let (flag, what) = match missing {
            Some(Missing::Conditional) => (
                &self.no_conditional,
                "does not support conditional writes (If-None-Match); cellar relies on the HEAD before each write",
            ),
            Some(Missing::Tagging) => (
                &self.no_tagging,
                "does not support object tagging; tag_tiers is skipped (`cellar check` reports it)",
            ),
            None => return false,
        };
        if !flag.swap(true, Ordering::Relaxed) {
            tracing::warn!("{}: the server {what}", self.location());
        }
        true
    }

    /// One small object in one request.
    fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<u64, StoreError> {
        let object = self.object(key);
        let len = bytes.len() as u64;
        let bytes = bytes::Bytes::from(bytes);
        let md5 = md5_b64(&bytes);
        loop {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.opts.bucket)
                .key(&object)
                .content_md5(&md5)
                .body(ByteStream::from(bytes.clone()));
            if !self.no_conditional.load(Ordering::Relaxed) {
                req = req.if_none_match("*");
            }
            if let Some(c) = &self.opts.storage_class {
                req = req.storage_class(StorageClass::from(c.as_str()));
            }
            if let Some(s) = &self.opts.server_side_encryption {
                req = req.server_side_encryption(ServerSideEncryption::from(s.as_str()));
            }
            if let Some((mode, until)) = self.lock_until() {
                req = req
                    .object_lock_mode(mode)
                    .object_lock_retain_until_date(until);
            }
            if let Some(t) = self.tagging() {
                req = req.tagging(t);
            }
            // Content-MD5 already protects the body: skip SigV4's second hash of it.
            let r = self.rt.block_on(
                req.customize()
                    .disable_payload_signing()
                    .mutate_request(self.headers())
                    .send(),
            );
            match r {
                Ok(_) => return Ok(len),
                Err(e) if self.lacks(not_implemented(&e)) => continue,
                Err(e) if e.code() == Some("PreconditionFailed") => {
                    return Err(StoreError::Exists {
                        store: self.location(),
                        key: key.to_string(),
                    })
                }
                Err(e) => return Err(self.fail("upload", key, &e)),
            }
        }
    }

    /// Abort the upload cellar started, and any other upload of the same
    /// key: a `CreateMultipartUpload` whose answer was lost (a timeout, a
    /// dropped connection) may still have made one, then retried by the
    /// SDK, and cellar never learnt its id. Keys are unique per backup, so
    /// no other backup's upload is touched (two writers racing for one
    /// key both fail at completion anyway; see `put`).
    fn abort(&self, key: &str, upload_id: Option<&str>) {
        let object = self.object(key);
        // The server may be what failed: keep trying for about a minute,
        // whatever the per-request timeout and attempts (a frozen server
        // would otherwise hold the backup for attempts × timeout each).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut delay = Duration::from_millis(500);
        let mut known = upload_id.map(str::to_string);
        for attempt in 1.. {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let r = self.rt.block_on(async {
                // The timer is made inside the runtime.
                tokio::time::timeout(left.min(Duration::from_secs(20)), async {
                    if let Some(id) = &known {
                        self.abort_one(&object, id).await?;
                        known = None;
                    }
                    let others = match self.uploads_of(&object).await {
                        // A policy that may write but not list uploads:
                        // the upload cellar knew is gone, nothing to retry.
                        Err((why, false)) => {
                            tracing::warn!("could not look for other uploads of {key}: {why}");
                            return Ok(());
                        }
                        r => r?,
                    };
                    for id in others {
                        self.abort_one(&object, &id).await?;
                    }
                    Ok(())
                })
                .await
            });
            let why = match r {
                Ok(Ok(())) => return,
                Ok(Err((why, true))) => why,
                Ok(Err((why, false))) => {
                    tracing::error!("could not abort the upload of {key}: {why}");
                    break;
                }
                Err(_) => "the server did not answer".to_string(),
            };
            tracing::warn!("aborting the upload of {key} (attempt {attempt}): {why}");
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(delay.min(left));
            delay = (delay * 2).min(Duration::from_secs(15));
        }
        tracing::error!(
            "could not abort the multipart upload{} of {key}; a bucket lifecycle rule \
             (AbortIncompleteMultipartUpload) or `cellar prune` later will clean it up",
            upload_id.map(|id| format!(" {id}")).unwrap_or_default()
        );
    }

    /// On failure: why, and whether trying again may help.
    async fn abort_one(&self, object: &str, id: &str) -> Result<(), (String, bool)> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.opts.bucket)
            .key(object)
            .upload_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err((explain(&self.opts, &e), unanswered(&e))),
        }
    }

    /// The incomplete multipart uploads of the objects under `prefix`.
    async fn uploads_under(
        &self,
        prefix: &str,
    ) -> Result<
        Vec<aws_sdk_s3::types::MultipartUpload>,
        SdkError<
            aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    > {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.opts.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await?;
            out.extend(page.uploads().iter().cloned());
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// The ids of the incomplete uploads of exactly `object`.
    async fn uploads_of(&self, object: &str) -> Result<Vec<String>, (String, bool)> {
        let all = self
            .uploads_under(object)
            .await
            .map_err(|e| (explain(&self.opts, &e), unanswered(&e)))?;
        Ok(all
            .iter()
            .filter(|u| u.key() == Some(object))
            .filter_map(|u| u.upload_id().map(str::to_string))
            .collect())
    }
}

/// Whether a request failed without a clear answer from the server (no
/// connection, no answer in time, a server error), so it may have been
/// carried out, and trying again may help.
fn unanswered<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => s.raw().status().is_server_error(),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

fn md5_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

async fn client(o: &S3Options) -> Client {
    let mut b = match (&o.access_key_id, &o.secret_access_key) {
        (Some(id), Some(secret)) => aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "cellar profile",
            ))
            .region(Region::new(
                o.region.clone().unwrap_or_else(|| "us-east-1".into()),
            )),
        _ => {
            // The standard chain: environment, shared profile, instance role.
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(r) = &o.region {
                loader = loader.region(Region::new(r.clone()));
            }
            let sdk = loader.load().await;
            let mut b = aws_sdk_s3::config::Builder::from(&sdk);
            if sdk.region().is_none() {
                b = b.region(Region::new("us-east-1"));
            }
            b
        }
    };
    if let Some(e) = &o.endpoint {
        b = b.endpoint_url(e);
    }
    b = b
        .force_path_style(o.path_style)
        // We send Content-MD5 ourselves; the SDK's default aws-chunked
        // checksum framing is not understood by every S3-compatible server.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(o.max_attempts.max(1)),
        )
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(o.timeout)
                .build(),
        );
    Client::from_conf(b.build())
}

/// One line that says what is wrong and what to do.
fn explain<E, R>(o: &S3Options, e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let endpoint = o.endpoint.as_deref().unwrap_or("AWS S3");
    match e {
        SdkError::DispatchFailure(_) => format!(
            "cannot reach {endpoint}: {}; check `endpoint` in [store.s3] and the network",
            DisplayErrorContext(e)
        ),
        SdkError::TimeoutError(_) => format!(
            "{endpoint} did not answer within {:?}; the server is down or overloaded",
            o.timeout
        ),
        _ => {
            let code = e.code().unwrap_or("");
            let fix = match code {
                "NoSuchBucket" => format!("bucket `{}` does not exist; create it or fix the url", o.bucket),
                "AccessDenied" | "AllAccessDisabled" => {
                    "access denied: the credentials need s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on the bucket".into()
                }
                "InvalidAccessKeyId" => "the server does not know this access key id; check access_key_id".into(),
                "SignatureDoesNotMatch" => "the signature does not match: the secret access key is wrong".into(),
                "RequestTimeTooSkewed" => "this host's clock is too far off; sync it (timedatectl set-ntp true)".into(),
                "AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException" => {
                    "wrong region for this bucket; set `region` in [store.s3] to the bucket's region".into()
                }
                "InvalidRequest" | "InvalidArgument" => format!(
                    "the server refused the request: {}",
                    e.message().unwrap_or("(no message)")
                ),
                _ => DisplayErrorContext(e).to_string(),
            };
            if code.is_empty() {
                fix
            } else {
                format!("{fix} ({code})")
            }
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

impl Store for S3Store {
    fn location(&self) -> String {
        let endpoint = self
            .opts
            .endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        if self.opts.prefix.is_empty() {
            format!("s3://{}{endpoint}", self.opts.bucket)
        } else {
            format!("s3://{}/{}{endpoint}", self.opts.bucket, self.opts.prefix)
        }
    }

    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64, StoreError> {
        // Never replace an object: If-None-Match on the write itself where
        // the server supports it, and a HEAD first for servers that ignore
        // that header (a race remains there; the README says so).
        let head = self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.opts.bucket)
                .key(self.object(key))
                .send(),
        );
        if head.is_ok() {
            return Err(StoreError::Exists {
                store: self.location(),
                key: key.to_string(),
            });
        }
        let read_err = |e: io::Error| StoreError::Io {
            op: "read data for",
            store: self.location(),
            key: key.to_string(),
            cause: e,
        };
        let first = self.opts.part_size.max(5 * MIB);
        let mut buf = vec![0u8; first];
        let n = fill(data, &mut buf).map_err(read_err)?;
        if n < first {
            // Small enough for one request.
            buf.truncate(n);
            return self.put_small(key, buf);
        }

        let object = self.object(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.opts.bucket)
            .key(&object);
        if let Some(c) = &self.opts.storage_class {
            create = create.storage_class(StorageClass::from(c.as_str()));
        }
        if let Some(s) = &self.opts.server_side_encryption {
            create = create.server_side_encryption(ServerSideEncryption::from(s.as_str()));
        }
        if let Some((mode, until)) = self.lock_until() {
            create = create
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        if let Some(t) = self.tagging() {
            create = create.tagging(t);
        }
        let created = match self.rt.block_on(
            create
                .clone()
                .customize()
                .mutate_request(self.headers())
                .send(),
        ) {
            Err(e) if self.lacks(not_implemented(&e)) => self.rt.block_on(
                create
                    .set_tagging(None)
                    .customize()
                    .mutate_request(self.headers())
                    .send(),
            ),
            r => r,
        };
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                // The server may have made the upload and lost the answer.
                let err = self.fail("start the upload of", key, &e);
                if unanswered(&e) {
                    self.abort(key, None);
                }
                return Err(err);
            }
        };
        let upload_id = created.upload_id().unwrap_or_default().to_string();

        let result = (|| -> Result<u64, StoreError> {
            let mut parts: Vec<CompletedPart> = Vec::new();
            let mut in_flight: std::collections::VecDeque<(i32, tokio::task::JoinHandle<_>)> =
                std::collections::VecDeque::new();
            let mut total = 0u64;
            let mut chunk = buf;
            let mut len = n;
            let mut number = 1i32;
            loop {
                chunk.truncate(len);
                total += len as u64;
                let body = ByteStream::from(std::mem::take(&mut chunk));
                let md5 = {
                    // The body owns the bytes now; hash them through it.
                    let bytes = body.bytes().expect("in-memory body");
                    md5_b64(bytes)
                };
                let req = self
                    .client
                    .upload_part()
                    .bucket(&self.opts.bucket)
                    .key(&object)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_md5(md5)
                    .body(body)
                    .customize()
                    .disable_payload_signing()
                    .mutate_request(self.headers());
                in_flight.push_back((number, self.rt.spawn(req.send())));
                // Two parts in flight: one uploading while the next is read.
                while in_flight.len() >= 2 {
                    let (num, h) = in_flight.pop_front().unwrap();
                    parts.push(self.finish_part(key, num, h)?);
                }
                if crate::cancel::requested() {
                    return Err(StoreError::Io {
                        op: "upload",
                        store: self.location(),
                        key: key.to_string(),
                        cause: crate::cancel::interrupted(),
                    });
                }
                let size = part_size(first, number as usize);
                chunk = vec![0u8; size];
                len = fill(data, &mut chunk).map_err(read_err)?;
                if len == 0 {
                    break;
                }
                number += 1;
                if number > 10_000 {
                    return Err(StoreError::Unsupported(format!(
                        "{key}: more than 10,000 parts; raise part_size in [store.s3]"
                    )));
                }
            }
            while let Some((num, h)) = in_flight.pop_front() {
                parts.push(self.finish_part(key, num, h)?);
            }
            let complete = self
                .client
                .complete_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(&object)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            let conditional = |c: bool| {
                complete
                    .clone()
                    .set_if_none_match(c.then(|| "*".to_string()))
                    .send()
            };
            let r = match self
                .rt
                .block_on(conditional(!self.no_conditional.load(Ordering::Relaxed)))
            {
                Err(e) if self.lacks(not_implemented(&e)) => self.rt.block_on(conditional(false)),
                r => r,
            };
            r.map_err(|e| {
                if e.code() == Some("PreconditionFailed") {
                    StoreError::Exists {
                        store: self.location(),
                        key: key.to_string(),
                    }
                } else {
                    self.fail("complete the upload of", key, &e)
                }
            })?;
            Ok(total)
        })();
        if result.is_err() {
            self.abort(key, Some(&upload_id));
        }
        result
    }

    fn get(&self, key: &str) -> Result<Reader, StoreError> {
        let object = self.object(key);
        let first = self.rt.block_on(
            self.client
                .get_object()
                .bucket(&self.opts.bucket)
                .key(&object)
                .send(),
        );
        let out = match first {
            Ok(o) => o,
            Err(e) if e.code() == Some("NoSuchKey") => {
                return Err(StoreError::NotFound {
                    store: self.location(),
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(self.fail("download", key, &e)),
        };
        let (tx, reader) = super::bridge::channel();
        let client = self.client.clone();
        let bucket = self.opts.bucket.clone();
        let opts = self.opts.clone();
        self.rt.spawn(async move {
            let mut body = out.body;
            let mut offset: u64 = 0;
            let mut retries = 0;
            loop {
                match body.next().await {
                    None => return,
                    Some(Ok(bytes)) => {
                        offset += bytes.len() as u64;
                        if tx.send(Ok(bytes)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if retries < 3 => {
                        // Resume where the stream broke.
                        retries += 1;
                        tracing::warn!(
                            "download of {object} broke at byte {offset} ({e}); resuming"
                        );
                        tokio::time::sleep(Duration::from_secs(retries)).await;
                        match client
                            .get_object()
                            .bucket(&bucket)
                            .key(&object)
                            .range(format!("bytes={offset}-"))
                            .send()
                            .await
                        {
                            Ok(o) => body = o.body,
                            Err(e) => {
                                let _ = tx.send(Err(io::Error::other(explain(&opts, &e)))).await;
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(io::Error::other(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::new(reader))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let full = self.object(prefix);
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.opts.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = self.rt.block_on(pages.next()) {
            let page = page.map_err(|e| self.fail("list", prefix, &e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                if k.len() < strip {
                    continue;
                }
                out.push(ObjectInfo {
                    key: k[strip..].to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                    md5: o.e_tag().and_then(super::md5_hex),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn sweep(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
    ) -> Result<Vec<String>, StoreError> {
        // Multipart uploads that a killed backup never completed or
        // aborted: the bucket keeps (and bills) their parts until then.
        let full = self.object(prefix);
        let mut out = Vec::new();
        let uploads = self
            .rt
            .block_on(self.uploads_under(&full))
            .map_err(|e| self.fail("list uploads under", prefix, &e))?;
        for u in uploads {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            let old = u
                .initiated()
                .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0))
                .is_some_and(|t| t < older_than);
            if !old {
                continue;
            }
            if !dry_run {
                self.rt
                    .block_on(
                        self.client
                            .abort_multipart_upload()
                            .bucket(&self.opts.bucket)
                            .key(key)
                            .upload_id(id)
                            .send(),
                    )
                    .map_err(|e| self.fail("abort the upload of", key, &e))?;
            }
            out.push(format!("incomplete multipart upload of {key} ({id})"));
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let r = self.rt.block_on(
            self.client
                .delete_object()
                .bucket(&self.opts.bucket)
                .key(self.object(key))
                .send(),
        );
        r.map(|_| ()).map_err(|e| self.fail("delete", key, &e))
    }

    fn locked_until(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        if self.opts.object_lock.is_none() {
            return Ok(None);
        }
        let head = self
            .rt
            .block_on(
                self.client
                    .head_object()
                    .bucket(&self.opts.bucket)
                    .key(self.object(key))
                    .send(),
            )
            .map_err(|e| self.fail("inspect", key, &e))?;
        Ok(head
            .object_lock_retain_until_date()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .filter(|t| *t > chrono::Utc::now()))
    }

    fn set_legal_hold(&self, key: &str, on: bool) -> Result<bool, StoreError> {
        if self.opts.object_lock.is_none() {
            return Ok(false);
        }
        let status = if on {
            aws_sdk_s3::types::ObjectLockLegalHoldStatus::On
        } else {
            aws_sdk_s3::types::ObjectLockLegalHoldStatus::Off
        };
        self.rt
            .block_on(
                self.client
                    .put_object_legal_hold()
                    .bucket(&self.opts.bucket)
                    .key(self.object(key))
                    .legal_hold(
                        aws_sdk_s3::types::ObjectLockLegalHold::builder()
                            .status(status)
                            .build(),
                    )
                    .send(),
            )
            .map(|_| true)
            .map_err(|e| self.fail("set the legal hold of", key, &e))
    }

    fn set_tier(&self, key: &str, tier: &str) -> Result<(), StoreError> {
        if !self.opts.tag_tiers || self.no_tagging.load(Ordering::Relaxed) {
            return Ok(());
        }
        let tagging = aws_sdk_s3::types::Tagging::builder()
            .tag_set(
                aws_sdk_s3::types::Tag::builder()
                    .key("cellar-tier")
                    .value(tier)
                    .build()
                    .expect("key and value are set"),
            )
            .build()
            .expect("tag set is set");
        self.rt
            .block_on(
                self.client
                    .put_object_tagging()
                    .bucket(&self.opts.bucket)
                    .key(self.object(key))
                    .tagging(tagging)
                    .send(),
            )
            .map(|_| ())
            .or_else(|e| {
                if e.code() == Some("NotImplemented") {
                    self.lacks(Some(Missing::Tagging));
                    Ok(())
                } else {
                    Err(self.fail("tag", key, &e))
                }
            })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.rt
            .block_on(self.client.head_bucket().bucket(&self.opts.bucket).send())
            .map_err(|e| {
                // HEAD answers carry no error code: say what its status means.
                let status = match &e {
                    SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
                    _ => None,
                };
                let message = match status {
                    Some(404) => format!(
                        "bucket `{}` does not exist; create it or fix the url (NoSuchBucket)",
                        self.opts.bucket
                    ),
                    Some(403) => "access denied to the bucket: wrong credentials, or they lack s3:ListBucket (403)".into(),
                    Some(301) | Some(400) => {
                        "wrong region for this bucket; set `region` in [store.s3] (or check the clock)".into()
                    }
                    _ => explain(&self.opts, &e),
                };
                StoreError::Remote {
                    op: "reach",
                    store: self.location(),
                    key: "the bucket".into(),
                    message,
                }
            })?;
        // Then prove write, read and delete with a probe object.
        super::probe(self)?;
        self.check_features()
    }
}

impl S3Store {
    /// What the profile asks of the bucket that the server may lack
    /// (Swift's S3 API has neither object lock nor tagging, and ignores
    /// object lock headers without a word): said here, in one line, so a
    /// backup never learns it half-way.
    fn check_features(&self) -> Result<(), StoreError> {
        let lacking = |message: String| StoreError::Remote {
            op: "use",
            store: self.location(),
            key: String::new(),
            message,
        };
        if self.opts.object_lock.is_some() {
            let r = self.rt.block_on(
                self.client
                    .get_object_lock_configuration()
                    .bucket(&self.opts.bucket)
                    .send(),
            );
            let enabled = r.as_ref().ok().is_some_and(|o| {
                o.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| e.as_str() == "Enabled")
            });
            if !enabled {
                let why = match &r {
                    Err(e) => e.code().unwrap_or("no answer").to_string(),
                    Ok(_) => "not enabled".to_string(),
                };
                return Err(lacking(format!(
                    "bucket `{}` has no object lock ({why}): S3 servers without it (Swift's S3 API, s3s-fs) accept the lock headers without enforcing them; remove object_lock from [store.s3], or use a bucket created with object lock",
                    self.opts.bucket
                )));
            }
        }
        if self.opts.tag_tiers && self.no_tagging.load(Ordering::Relaxed) {
            return Err(lacking(
                "this server does not support object tagging (NotImplemented): tag_tiers cannot tag backups for lifecycle rules; remove tag_tiers from [store.s3] (backups still work: cellar skips the tags)".into(),
            ));
        }
        Ok(())
    }
}

impl S3Store {
    fn finish_part(
        &self,
        key: &str,
        number: i32,
        h: tokio::task::JoinHandle<
            Result<
                aws_sdk_s3::operation::upload_part::UploadPartOutput,
                SdkError<
                    aws_sdk_s3::operation::upload_part::UploadPartError,
                    aws_smithy_runtime_api::http::Response,
                >,
            >,
        >,
    ) -> Result<CompletedPart, StoreError> {
        let out = self
            .rt
            .block_on(h)
            .map_err(|e| StoreError::Unsupported(format!("upload task failed: {e}")))?
            .map_err(|e| self.fail("upload a part of", key, &e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_parts_hold_more_than_five_terabytes() {
        let total: u128 = (0..10_000)
            .map(|n| part_size(DEFAULT_PART_SIZE, n) as u128)
            .sum();
        assert!(total > 5 * 1024u128.pow(4), "{total}");
        assert_eq!(part_size(DEFAULT_PART_SIZE, 0), 16 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 499), 16 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 500), 32 * MIB);
        assert_eq!(part_size(DEFAULT_PART_SIZE, 9_999), MAX_PART);
    }
}
