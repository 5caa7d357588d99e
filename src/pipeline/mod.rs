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

use std::io::{self, Read, Write};

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
    let (mut plain_w, plain_r) = channel::pipe();
    let (stored_w, mut stored_r) = channel::pipe();

    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let r = produce(&mut plain_w);
            // On error the writer is dropped unfinished: the abort marker
            // tells the next stage the stream is incomplete.
            r.and_then(|_| plain_w.finish().map_err(anyhow::Error::from))
        });
        let encoder = s.spawn(move || encode(plain_r, stored_w, compression, recipients, progress));
        let stored = store.put(key, &mut stored_r);
        drop(stored_r);
        let produced = producer.join().expect("source thread panicked");
        let encoded = encoder.join().expect("encoder thread panicked");

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
            (Ok(()), Ok((plain, stored)), Ok(n)) => {
                debug_assert_eq!(n, stored.bytes);
                Ok(Streamed { plain, stored })
            }
        }
    })
}

fn encode(
    mut input: channel::ChannelReader,
    output: channel::ChannelWriter,
    compression: &Compression,
    recipients: &[RecipientCert],
    progress: &dyn Progress,
) -> io::Result<(Tally, Tally)> {
    let mut stored = hashing::HashWriter::new(output);
    let plain_tally = {
        let message = keys::encrypt_to(&mut stored, recipients).map_err(io::Error::other)?;
        let compressor = Compressor::new(message, compression)?;
        let mut plain = hashing::HashWriter::new(compressor);
        let mut buf = vec![0u8; channel::CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if crate::cancel::requested() {
                return Err(crate::cancel::interrupted());
            }
            plain.write_all(&buf[..n])?;
            progress.advance(n as u64);
        }
        let (compressor, plain_tally) = plain.into_parts();
        let message = compressor.finish()?;
        message.finalize().map_err(io::Error::other)?;
        plain_tally
    };
    let (output, stored_tally) = stored.into_parts();
    output.finish()?;
    Ok((plain_tally, stored_tally))
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
/// Two stages, joined by a bounded pipe: one thread reads the stored bytes
/// (hashing them) and decrypts; the calling thread decompresses, hashes the
/// plaintext and runs `consume`. Memory stays flat.
pub fn restore_stream<T>(
    store: &dyn Store,
    manifest: &Manifest,
    expected: &Payload,
    identity: &Identity,
    progress: &dyn Progress,
    consume: impl FnOnce(&mut dyn Read) -> anyhow::Result<T>,
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
    let (decrypted_w, decrypted_r) = channel::pipe();
    let (plain_w, plain_r) = channel::pipe();
    let (decrypted, stored, decompressed, outcome) = std::thread::scope(|s| {
        let source: crate::store::Reader = Box::new(Capped {
            inner: source,
            left: expected.stored_size,
            limit: expected.stored_size,
            what: "stored payload",
        });
        let decrypting = s.spawn(move || decrypt_stage(source, identity, decrypted_w));
        let decompressing = s.spawn(move || decompress_stage(decrypted_r, algorithm, plain_w));
        let outcome: Result<(T, Tally), RestoreError> = (|| {
            let mut plain = hashing::HashReader::new(ProgressReader {
                inner: Capped {
                    inner: plain_r,
                    left: expected.plain_size,
                    limit: expected.plain_size,
                    what: "decrypted, decompressed content",
                },
                progress,
            });
            let value = consume(&mut plain).map_err(RestoreError::Consumer)?;
            io::copy(&mut plain, &mut io::sink())
                .map_err(|e| damaged(format!("decompression failed: {e}")))?;
            Ok((value, plain.tally))
        })();
        // (The plaintext reader is gone here: a stage still writing stops.)
        let decompressed = decompressing.join().expect("decompressing thread panicked");
        let (decrypted, stored) = decrypting.join().expect("decrypting thread panicked");
        (decrypted, stored, decompressed, outcome)
    });
    progress.finish();

    // A BLAKE2 mismatch of the stored bytes is the clearest diagnosis of a
    // damaged payload, so it wins; then the decryption's own failure (the
    // other stage only saw its echo); then the consumer's.
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
        Err(e) if outcome.is_ok() && decrypted.is_ok() => {
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
    let (value, plain) = outcome?;
    if plain.bytes != expected.plain_size || plain.hex() != expected.plain_blake2b {
        return Err(damaged(
            "the decrypted, decompressed content does not match the manifest's size and BLAKE2b-512"
                .into(),
        ));
    }
    Ok(value)
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
        let mut buf = vec![0u8; channel::CHUNK];
        loop {
            let n = match decompressed.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("decompression failed: {e}")),
            };
            if out.write_all(&buf[..n]).is_err() {
                return Ok(());
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

/// Reads the stored bytes (hashing them) and writes the decrypted stream
/// into `out`. Whatever happens, the stored bytes are read to their end
/// (unless cellar is stopping), so their size and BLAKE2b can be judged.
fn decrypt_stage(
    source: crate::store::Reader,
    identity: &Identity,
    out: channel::ChannelWriter,
) -> (Result<(), Decrypted>, io::Result<Tally>) {
    let mut stored = hashing::HashReader::new(source);
    let decrypted = (|| {
        let mut out = out;
        let mut d = keys::decrypt_from(&mut stored, identity).map_err(Decrypted::Key)?;
        let mut buf = vec![0u8; channel::CHUNK];
        loop {
            let n = match d.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Decrypted::Integrity(e)),
            };
            out.write_all(&buf[..n]).map_err(|_| Decrypted::Closed)?;
        }
        // Dropping `out` unfinished (any error above) tells the next stage
        // the stream is incomplete.
        out.finish().map_err(|_| Decrypted::Closed)
    })();
    let mut buf = vec![0u8; channel::CHUNK];
    let drained = loop {
        if crate::cancel::requested() {
            break Err(crate::cancel::interrupted());
        }
        match stored.read(&mut buf) {
            Ok(0) => break Ok(stored.tally.clone()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    (decrypted, drained)
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
            return Err(io::Error::other(format!(
                "the {} is larger than the manifest says ({} bytes); the payload is damaged or forged",
                self.what, self.limit
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if crate::cancel::requested() {
            return Err(crate::cancel::interrupted());
        }
        let n = self.inner.read(out)?;
        self.progress.advance(n as u64);
        Ok(n)
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
