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
    let mut stored = hashing::HashReader::new(store.get(key)?);
    let mut plain_tally = None;
    let outcome: Result<T, RestoreError> = (|| {
        let mut decrypted =
            keys::decrypt_from(&mut stored, identity).map_err(|e| RestoreError::Decrypt {
                backup: backup_id.to_string(),
                payload: expected.name.clone(),
                detail: format!("{e:#}"),
            })?;
        let value = {
            let decompressed = compress::decompressor(&mut decrypted, algorithm)
                .map_err(|e| damaged(format!("cannot start decompression: {e}")))?;
            let mut plain = hashing::HashReader::new(ProgressReader {
                inner: decompressed,
                progress,
            });
            let value = consume(&mut plain).map_err(RestoreError::Consumer)?;
            io::copy(&mut plain, &mut io::sink())
                .map_err(|e| damaged(format!("decompression failed: {e}")))?;
            plain_tally = Some(plain.tally.clone());
            value
        };
        // Reading the decryptor to its end checks the MDC.
        let trailing = io::copy(&mut decrypted, &mut io::sink())
            .map_err(|e| damaged(format!("OpenPGP integrity check failed: {e}")))?;
        if trailing > 0 {
            return Err(damaged(format!(
                "{trailing} unexpected bytes after the compressed stream"
            )));
        }
        Ok(value)
    })();
    progress.finish();

    // Whatever happened, finish reading the stored bytes: a BLAKE2 mismatch
    // is the clearest diagnosis of a damaged payload, so it wins.
    let drained = io::copy(&mut stored, &mut io::sink());
    if let Err(e) = drained {
        if outcome.is_ok() {
            return Err(RestoreError::Store(StoreError::Io {
                op: "read",
                store: store.location(),
                key: key.to_string(),
                cause: e,
            }));
        }
    } else {
        if stored.tally.bytes != expected.stored_size {
            return Err(damaged(format!(
                "size is {} bytes, the manifest says {}",
                stored.tally.bytes, expected.stored_size
            )));
        }
        if stored.tally.hex() != expected.stored_blake2b {
            return Err(damaged(
                "BLAKE2b-512 of the stored bytes does not match the manifest".into(),
            ));
        }
    }
    let value = outcome?;
    let plain = plain_tally.expect("set on success");
    if plain.bytes != expected.plain_size || plain.hex() != expected.plain_blake2b {
        return Err(damaged(
            "the decrypted, decompressed content does not match the manifest's size and BLAKE2b-512"
                .into(),
        ));
    }
    Ok(value)
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
