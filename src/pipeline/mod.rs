//! The streaming pipeline.
//!
//! Backup: source → plaintext tally → compression → OpenPGP encryption →
//! stored-bytes tally → store, across three threads joined by bounded
//! pipes (see [`channel`]), so memory stays flat whatever the dump's size
//! and no temporary copy of the dump is written. The tally over the stored
//! bytes sits last: the manifest records exactly what the store holds.
//!
//! Restore: store → stored-bytes tally → decryption → decompression →
//! plaintext tally → consumer. The consumer must not commit anything until
//! [`restore_stream`] returns `Ok`, which happens only once the stored
//! size and BLAKE2b-512 match the manifest, the OpenPGP integrity check
//! (MDC) passed and the plaintext matches too.

pub mod channel;
pub mod compress;
pub mod hashing;
pub mod writeback;

use std::io::{self, BufRead, Read, Write};

use crate::keys::{self, Identity, RecipientCert};
use crate::manifest::{Manifest, Payload};
use crate::profile::Compression;
use crate::progress::Progress;
use crate::store::{Store, StoreError};

pub use hashing::Tally;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source (pg_dump, the folder walk) failed; its own message says why.
    #[error("{0:#}")]
    Source(anyhow::Error),
    #[error("compressing or encrypting: {0}")]
    Encode(io::Error),
    #[error(transparent)]
    Store(StoreError),
}

/// What the backup stream measured.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub plain: Tally,
    pub stored: Tally,
}

/// Streams what `produce` writes through compression and encryption into
/// `store` under `key`. On any failure nothing is left under `key`.
///
/// Four threads joined by bounded pipes: the source; the plaintext hash
/// (chunks pass through it uncopied); compression and encryption; the
/// store, which hashes the stored bytes as it reads them. The two hashes
/// thus run beside the compressor instead of in front of it.
pub fn backup_stream<F>(
    store: &dyn Store,
    key: &str,
    compression: &Compression,
    recipients: &[RecipientCert],
    progress: &dyn Progress,
    produce: F,
) -> Result<Streamed, PipelineError>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()> + Send,
{
    // xz is far slower than any source and takes its input a block (12 MiB
    // at -6) per thread at a time: deeper pipes in front of it would only
    // hold memory (6 MiB), as a whole block waits in liblzma anyway.
    let depth = match compression.algorithm {
        crate::profile::Algorithm::Xz => 4,
        crate::profile::Algorithm::Zstd => channel::DEPTH,
    };
    let (mut plain_w, plain_r) = channel::pipe_of(depth);
    let (hashed_w, hashed_r) = channel::pipe_of(depth);
    let (stored_w, stored_r) = channel::pipe();

    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let r = produce(&mut plain_w);
            // On error the writer is dropped unfinished: the abort marker
            // tells the next stage the stream is incomplete.
            r.and_then(|_| plain_w.finish().map_err(anyhow::Error::from))
        });
        let hasher = s.spawn(move || tally_stage(plain_r, hashed_w, u64::MAX, "plaintext"));
        let encoder =
            s.spawn(move || encode(hashed_r, stored_w, compression, recipients, progress));
        let mut stored_r = hashing::HashReader::new(stored_r);
        let stored = store.put(key, &mut stored_r);
        let stored_tally = stored_r.tally.clone();
        drop(stored_r);
        let produced = producer.join().expect("source thread panicked");
        let hashed = hasher.join().expect("hashing thread panicked");
        let encoded = encoder.join().expect("encoder thread panicked");
        // The hash stage only relays: its failure is the cause only when
        // the encoder saw nothing but its abort.
        let encoded = match (hashed, encoded) {
            (Ok(plain), Ok(())) => Ok(plain),
            (Err(h), Err(e)) if channel::is_aborted(&e) => Err(h),
            (_, Err(e)) | (Err(e), Ok(())) => Err(e),
        };

        // Report the cause, not its echo: a failing store breaks the pipes
        // upstream, and a failing source aborts the stages after it.
        let echo = |e: &anyhow::Error| {
            e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            })
        };
        match (produced, encoded, stored) {
            (_, _, Err(e)) if !e.is_upstream() => Err(PipelineError::Store(e)),
            (Err(e), Err(enc), _) if echo(&e) => Err(PipelineError::Encode(enc)),
            (Err(e), _, _) => Err(PipelineError::Source(e)),
            (Ok(()), Err(e), _) => Err(PipelineError::Encode(e)),
            (Ok(()), Ok(_), Err(e)) => Err(PipelineError::Store(e)),
            (Ok(()), Ok(plain), Ok(n)) => {
                debug_assert_eq!(n, stored_tally.bytes);
                Ok(Streamed {
                    plain,
                    stored: stored_tally,
                })
            }
        }
    })
}

/// Hashes and counts the chunks going from `input` to `out`, without
/// copying them; fails as soon as more than `limit` bytes went by.
fn tally_stage(
    mut input: channel::ChannelReader,
    mut out: channel::ChannelWriter,
    limit: u64,
    what: &'static str,
) -> io::Result<Tally> {
    let mut tally = Tally::default();
    while let Some(chunk) = input.recv_chunk()? {
        if tally.bytes + chunk.len() as u64 > limit {
            return Err(io::Error::other(TooLarge { what, limit }));
        }
        tally.update(&chunk);
        out.send_chunk(chunk)?;
        while let Some(spent) = out.take_spent() {
            input.recycle(spent);
        }
    }
    out.finish()?;
    Ok(tally)
}

fn encode(
    mut input: channel::ChannelReader,
    mut output: channel::ChannelWriter,
    compression: &Compression,
    recipients: &[RecipientCert],
    progress: &dyn Progress,
) -> io::Result<()> {
    {
        let message = keys::encrypt_to(&mut output, recipients).map_err(io::Error::other)?;
        // It tells `progress` what it has compressed.
        let mut compressor = Compressor::new(message, compression, progress)?;
        loop {
            let n = {
                let chunk = input.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                if crate::cancel::requested() {
                    return Err(crate::cancel::interrupted());
                }
                compressor.write_all(chunk)?;
                chunk.len()
            };
            input.consume(n);
        }
        let message = compressor.finish()?;
        message.finalize().map_err(io::Error::other)?;
    }
    output.finish()
}

use compress::Compressor;

/// Why a restore or verify stopped.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {backup} is damaged: {payload}: {detail}")]
    Damaged {
        backup: String,
        payload: String,
        detail: String,
    },
    #[error("cannot decrypt {payload} of backup {backup}: {detail}")]
    Decrypt {
        backup: String,
        payload: String,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer (pg_restore, psql, tar extraction) failed on its own.
    #[error("{0:#}")]
    Consumer(anyhow::Error),
}

/// Streams one payload out of the store into `consume`, then proves the
/// stream was intact. `consume` gets the plaintext; it may stop reading
/// early (the rest is drained and checked). Its result is returned only
/// when every check passed.
///
/// Four stages, joined by bounded pipes, run beside the calling thread
/// (which runs `consume`): reading the stored bytes and hashing them;
/// decryption; decompression; hashing the plaintext. Chunks pass through
/// the hash stages uncopied. Memory stays flat.
pub fn restore_stream<T>(
    store: &dyn Store,
    manifest: &Manifest,
    expected: &Payload,
    identity: &Identity,
    progress: &dyn Progress,
    consume: impl FnOnce(&mut dyn BufRead) -> anyhow::Result<T>,
) -> Result<T, RestoreError> {
    let backup_id = manifest.id.as_str();
    let algorithm = manifest.compression.algorithm;
    let key = &format!("{}/{}", manifest.profile, expected.name);
    let damaged = |detail: String| RestoreError::Damaged {
        backup: backup_id.to_string(),
        payload: expected.name.clone(),
        detail,
    };
    let source = store.get(key)?;
    let (fetched_w, fetched_r) = channel::pipe();
    let (decrypted_w, decrypted_r) = channel::pipe();
    let (plain_w, plain_r) = channel::pipe();
    let (hashed_w, hashed_r) = channel::pipe();
    let (decrypted, stored, decompressed, plain, outcome) = std::thread::scope(|s| {
        let source = Capped {
            inner: source,
            left: expected.stored_size,
            limit: expected.stored_size,
            what: "stored payload",
        };
        let fetching = s.spawn(move || fetch_stage(source, fetched_w));
        let decrypting = s.spawn(move || decrypt_stage(fetched_r, identity, decrypted_w));
        let decompressing = s.spawn(move || decompress_stage(decrypted_r, algorithm, plain_w));
        let limit = expected.plain_size;
        let hashing = s.spawn(move || {
            tally_stage(plain_r, hashed_w, limit, "decrypted, decompressed content")
        });
        let outcome: Result<T, RestoreError> = (|| {
            let mut plain = ProgressReader {
                inner: hashed_r,
                progress,
            };
            let value = consume(&mut plain).map_err(RestoreError::Consumer)?;
            io::copy(&mut plain, &mut io::sink())
                .map_err(|e| damaged(format!("decompression failed: {e}")))?;
            Ok(value)
        })();
        // (The plaintext reader is gone here: a stage still writing stops.)
        let plain = hashing.join().expect("hashing thread panicked");
        let decompressed = decompressing.join().expect("decompressing thread panicked");
        let decrypted = decrypting.join().expect("decrypting thread panicked");
        let stored = fetching.join().expect("reading thread panicked");
        (decrypted, stored, decompressed, plain, outcome)
    });

    // A BLAKE2 mismatch of the stored bytes is the clearest diagnosis of a
    // damaged payload, so it wins; then the decryption's own failure (the
    // other stages only saw its echo); then the consumer's.
    let decrypt_echo = matches!(&decrypted, Err(Decrypted::Integrity(e)) if channel::is_aborted(e));
    match stored {
        Ok(tally) => {
            if tally.bytes != expected.stored_size {
                return Err(damaged(format!(
                    "size is {} bytes, the manifest says {}",
                    tally.bytes, expected.stored_size
                )));
            }
            if tally.hex() != expected.stored_blake2b {
                return Err(damaged(
                    "BLAKE2b-512 of the stored bytes does not match the manifest".into(),
                ));
            }
        }
        // Reading the store failed (or stopped past the manifest's size):
        // everything after it only saw the echo.
        Err(e) if decrypt_echo || (outcome.is_ok() && decrypted.is_ok()) => {
            if is_over_limit(&e) {
                return Err(damaged(e.to_string()));
            }
            return Err(RestoreError::Store(StoreError::Io {
                op: "read",
                store: store.location(),
                key: key.to_string(),
                cause: e,
            }));
        }
        Err(_) => {}
    }
    match decrypted {
        Err(Decrypted::Key(e)) => {
            return Err(RestoreError::Decrypt {
                backup: backup_id.to_string(),
                payload: expected.name.clone(),
                detail: format!("{e:#}"),
            })
        }
        Err(Decrypted::Integrity(e)) => {
            return Err(damaged(format!("OpenPGP integrity check failed: {e}")))
        }
        // The consumer stopped reading: its own error says why.
        Err(Decrypted::Closed) | Ok(()) => {}
    }
    if let Err(detail) = decompressed {
        return Err(damaged(detail));
    }
    let plain = match plain {
        Err(e) if is_over_limit(&e) => return Err(damaged(e.to_string())),
        other => other,
    };
    let value = outcome?;
    let plain = plain.map_err(|e| damaged(format!("decompression failed: {e}")))?;
    if plain.bytes != expected.plain_size || plain.hex() != expected.plain_blake2b {
        return Err(damaged(
            "the decrypted, decompressed content does not match the manifest's size and BLAKE2b-512"
                .into(),
        ));
    }
    Ok(value)
}

/// A stream that ran past the size its manifest gives it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {what} is larger than the manifest says ({limit} bytes); the payload is damaged or forged"
)]
struct TooLarge {
    what: &'static str,
    limit: u64,
}

fn is_over_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooLarge>())
}

/// Reads the stored bytes, hashing them, into `out`. Whatever happens
/// downstream, they are read to their end (unless cellar is stopping), so
/// their size and BLAKE2b can be judged.
fn fetch_stage(mut source: impl Read, mut out: channel::ChannelWriter) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut forward = true;
    let mut chunk = Vec::new();
    loop {
        if crate::cancel::requested() {
            return Err(crate::cancel::interrupted());
        }
        if forward {
            chunk = out.reuse();
        }
        chunk.resize(channel::CHUNK, 0);
        let n = channel::read_full(&mut source, &mut chunk)?;
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        tally.update(&chunk);
        if forward && out.send_chunk(std::mem::take(&mut chunk)).is_err() {
            // The next stage stopped: keep reading, only to hash.
            forward = false;
        }
    }
    if forward {
        let _ = out.finish();
    }
    Ok(tally)
}

/// Decompresses `input` into `out`; the error is what makes the payload
/// damaged (`Ok` also when the next stage stopped reading: it says why).
fn decompress_stage(
    mut input: channel::ChannelReader,
    algorithm: crate::profile::Algorithm,
    out: channel::ChannelWriter,
) -> Result<(), String> {
    let mut out = out;
    {
        let mut decompressed = compress::decompressor(&mut input, algorithm)
            .map_err(|e| format!("cannot start decompression: {e}"))?;
        loop {
            match out.fill_from(&mut decompressed, &mut |_| Ok(())) {
                Ok(0) => break,
                Ok(_) => {}
                // The next stage stopped reading: it says why.
                Err(e) if channel::is_closed(&e) => return Ok(()),
                Err(e) => return Err(format!("decompression failed: {e}")),
            }
        }
    }
    let trailing = io::copy(&mut input, &mut io::sink())
        .map_err(|e| format!("reading after the compressed stream: {e}"))?;
    if trailing > 0 {
        return Err(format!(
            "{trailing} unexpected bytes after the compressed stream"
        ));
    }
    let _ = out.finish();
    Ok(())
}

/// How the decrypting stage ended, when not well.
enum Decrypted {
    /// No key of ours opens it, or it is no OpenPGP message.
    Key(anyhow::Error),
    /// Reading or decrypting failed midway (the MDC is checked at the end).
    Integrity(io::Error),
    /// The next stage stopped reading.
    Closed,
}

/// Decrypts the stored bytes from `input` into `out`.
fn decrypt_stage(
    input: channel::ChannelReader,
    identity: &Identity,
    mut out: channel::ChannelWriter,
) -> Result<(), Decrypted> {
    let input = SyncReader(std::sync::Mutex::new(input));
    let mut d = keys::decrypt_from(input, identity).map_err(Decrypted::Key)?;
    loop {
        match out.fill_from(&mut d, &mut |_| Ok(())) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if channel::is_closed(&e) => return Err(Decrypted::Closed),
            Err(e) => return Err(Decrypted::Integrity(e)),
        }
    }
    // Dropping `out` unfinished (any error above) tells the next stage the
    // stream is incomplete.
    out.finish().map_err(|_| Decrypted::Closed)
}

/// A reader that is `Sync`, as the OpenPGP parser requires, for one that
/// only moves between threads (the lock is never contended).
struct SyncReader<R>(std::sync::Mutex<R>);

impl<R: Read> Read for SyncReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.0.get_mut() {
            Ok(r) => r.read(out),
            Err(p) => p.into_inner().read(out),
        }
    }
}

/// Stops a stream that runs past the size the manifest gives it: a forged
/// or damaged payload (a decompression bomb) cannot fill a disk or run for
/// hours before the hashes are compared at the end.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
    what: &'static str,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if n as u64 > self.left {
            return Err(io::Error::other(TooLarge {
                what: self.what,
                limit: self.limit,
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: BufRead> Read for ProgressReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for ProgressReader<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if crate::cancel::requested() {
            return Err(crate::cancel::interrupted());
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.progress.advance(n as u64);
    }
}

/// Copies `r` into `w` straight from `r`'s buffer, in writes as large as
/// its chunks.
pub fn copy_buffered(r: &mut dyn BufRead, w: &mut dyn Write) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(total);
            }
            w.write_all(buf)?;
            buf.len()
        };
        r.consume(n);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_longer_than_the_manifest_says_stops_there() {
        let mut r = Capped {
            inner: io::repeat(0),
            left: 1000,
            limit: 1000,
            what: "content",
        };
        let mut buf = [0u8; 300];
        let mut total = 0;
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, 900);
        assert!(err
            .to_string()
            .contains("larger than the manifest says (1000 bytes)"));
        let mut exact = Capped {
            inner: &[7u8; 1000][..],
            left: 1000,
            limit: 1000,
            what: "content",
        };
        assert_eq!(io::copy(&mut exact, &mut io::sink()).unwrap(), 1000);
    }
}
