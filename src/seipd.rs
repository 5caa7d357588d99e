//! The OpenPGP encryption container cellar writes: PKESKv3 packets, then a
//! Symmetrically Encrypted Integrity Protected Data packet (SEIPDv1, AES-256
//! in OpenPGP's CFB mode) holding one literal data packet and the MDC, as
//! RFC 4880 §5.13 and `gpg --encrypt -z 0` have it.
//!
//! Why not sequoia's `serialize::stream::Encryptor`: it computes the MDC's
//! SHA-1 with collision detection (`sha1collisiondetection`) and cannot be
//! told otherwise; on a backup of poorly compressible files that was 13 % of
//! cellar's CPU (`perf record`, 2026-12-07), more than AES. Detection
//! guards a reader against a forged message; a writer hashing its own bytes
//! has nothing to detect, so the MDC here is a plain SHA-1 (with the CPU's
//! SHA instructions where it has them). Every other part is sequoia's: the
//! session key, the PKESK packets, the packet headers and length encodings,
//! and the CFB encryptor. Reading is untouched: payloads are parsed and the
//! MDC checked by sequoia's strict decryptor (collision detection included).

use std::io::{self, Write};

use openpgp::crypto::symmetric::{BlockCipherMode, Encryptor, PaddingMode};
use openpgp::crypto::SessionKey;
use openpgp::packet::header::{BodyLength, CTB};
use openpgp::packet::key::{KeyParts, KeyRole};
use openpgp::packet::pkesk::PKESK3;
use openpgp::packet::{Key, Packet, Tag};
use openpgp::serialize::Marshal;
use openpgp::types::SymmetricAlgorithm;
use sequoia_openpgp as openpgp;
use sha1::{Digest, Sha1};

const ALGO: SymmetricAlgorithm = SymmetricAlgorithm::AES256;

/// Size of the partial body chunks of both packets (a power of two, at
/// least 512 for the first one, RFC 4880 §4.2.2.4).
const CHUNK: usize = 1 << 16;

/// A writer of one encrypted message: what is written to it is the literal
/// data; [`Seipd::finalize`] writes the MDC and returns the sink.
pub struct Seipd<W: Write> {
    literal: Partial<Mdc<Partial<W>>>,
}

impl<W: Write> Seipd<W> {
    /// Writes the PKESK packets (one per key in `keys`) and the headers, and
    /// returns the writer for the literal data.
    pub fn new<'k, P, R, I>(mut sink: W, keys: I) -> openpgp::Result<Self>
    where
        P: KeyParts + 'k,
        R: KeyRole + 'k,
        I: IntoIterator<Item = &'k Key<P, R>>,
    {
        let session_key = SessionKey::new(ALGO.key_size()?)?;
        let mut any = false;
        for key in keys {
            let pkesk = PKESK3::for_recipient(ALGO, &session_key, key)?;
            Packet::PKESK(pkesk.into()).serialize(&mut sink)?;
            any = true;
        }
        if !any {
            return Err(anyhow::anyhow!("no recipient to encrypt to"));
        }
        let mut seipd = Partial::new(sink, Tag::SEIP)?;
        seipd.write_all(&[1])?; // version
        let cfb = Encryptor::new(
            ALGO,
            BlockCipherMode::CFB,
            PaddingMode::None,
            &session_key,
            None,
            seipd,
        )?;
        let mut mdc = Mdc {
            cfb,
            sha1: Sha1::new(),
        };
        // A block of random bytes, its last two repeated (the quick check):
        // OpenPGP's CFB starts from a zero IV.
        let mut prefix = vec![0; ALGO.block_size()? + 2];
        let n = prefix.len();
        openpgp::crypto::random(&mut prefix[..n - 2])?;
        prefix.copy_within(n - 4..n - 2, n - 2);
        mdc.write_all(&prefix)?;
        let mut literal = Partial::new(mdc, Tag::Literal)?;
        // Binary data, no file name, no date: what sequoia's LiteralWriter
        // writes by default.
        literal.write_all(&[b'b', 0, 0, 0, 0, 0])?;
        Ok(Seipd { literal })
    }

    /// Ends the literal packet, writes the MDC packet and ends the
    /// encrypted one. Without it the message is cut short, and readers
    /// refuse it.
    pub fn finalize(self) -> openpgp::Result<W> {
        let mut mdc = self.literal.finish()?;
        let mut header = Vec::with_capacity(2);
        CTB::new(Tag::MDC).serialize(&mut header)?;
        BodyLength::Full(20).serialize(&mut header)?;
        // The hash covers the MDC packet's own header, not its digest.
        mdc.write_all(&header)?;
        let digest = mdc.sha1.finalize();
        mdc.cfb.write_all(&digest)?;
        let seipd = mdc.cfb.finalize()?;
        seipd.finish()
    }
}

impl<W: Write> Write for Seipd<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.literal.write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.literal.flush()
    }
}

/// Hashes what goes into the encryption, for the MDC.
struct Mdc<W: Write> {
    cfb: Encryptor<W>,
    sha1: Sha1,
}

impl<W: Write> Write for Mdc<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.cfb.write_all(data)?;
        self.sha1.update(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.cfb.flush()
    }
}

/// One packet of a length not known in advance: its body goes out in
/// partial-length chunks of [`CHUNK`] bytes, the rest with a definite
/// length at [`Partial::finish`].
struct Partial<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Partial<W> {
    fn new(mut inner: W, tag: Tag) -> openpgp::Result<Self> {
        CTB::new(tag).serialize(&mut inner)?;
        Ok(Partial {
            inner,
            pending: Vec::with_capacity(CHUNK),
        })
    }

    fn emit(inner: &mut W, chunk: &[u8]) -> io::Result<()> {
        debug_assert_eq!(chunk.len(), CHUNK);
        BodyLength::Partial(CHUNK as u32)
            .serialize(inner)
            .map_err(io::Error::other)?;
        inner.write_all(chunk)
    }

    fn finish(mut self) -> openpgp::Result<W> {
        BodyLength::Full(self.pending.len() as u32).serialize(&mut self.inner)?;
        self.inner.write_all(&self.pending)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Partial<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && data.len() >= CHUNK {
            // Whole chunks go straight through, uncopied.
            let whole = data.len() / CHUNK * CHUNK;
            for chunk in data[..whole].chunks(CHUNK) {
                Self::emit(&mut self.inner, chunk)?;
            }
            return Ok(whole);
        }
        let n = (CHUNK - self.pending.len()).min(data.len());
        self.pending.extend_from_slice(&data[..n]);
        if self.pending.len() == CHUNK {
            Self::emit(&mut self.inner, &self.pending)?;
            self.pending.clear();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Identity, RecipientCert};

    fn key() -> (tempfile::TempDir, Vec<RecipientCert>, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let (pubp, keyp, _) = crate::keys::keygen(dir.path(), "t", "test", None).unwrap();
        let r = vec![crate::keys::load_recipient(&pubp).unwrap()];
        let id = crate::keys::load_identity(&keyp, None).unwrap();
        (dir, r, id)
    }

    /// Messages of every size around the chunk boundaries open with
    /// sequoia's strict decryptor (which checks the MDC) to the same bytes.
    #[test]
    fn messages_of_every_size_open_to_what_was_written() {
        let (_dir, r, id) = key();
        // Every size from a little under one chunk to a little over: the
        // literal packet (6 header bytes + data) and the encrypted one (53
        // bytes more) each end exactly on a chunk boundary at one of them,
        // leaving an empty final part.
        let sizes = [0, 1, 15, 16, 17, 511, 3 * CHUNK + 5, 4 * CHUNK - 6]
            .into_iter()
            .chain(CHUNK - 80..=CHUNK + 8);
        for size in sizes {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 256) as u8).collect();
            // Written in uneven pieces, and in one.
            for piece in [1000, size.max(1)] {
                let mut w = crate::keys::encrypt_to(Vec::new(), &r).unwrap();
                for part in data.chunks(piece) {
                    w.write_all(part).unwrap();
                }
                let out = w.finalize().unwrap();
                let mut back = Vec::new();
                io::Read::read_to_end(
                    &mut crate::keys::decrypt_from(&out[..], &id).unwrap(),
                    &mut back,
                )
                .unwrap();
                assert!(back == data, "size {size}, pieces of {piece}");
            }
        }
    }

    /// A message cut before its MDC, or with one byte changed, is refused.
    #[test]
    fn a_changed_or_cut_message_is_refused() {
        let (_dir, r, id) = key();
        let mut w = crate::keys::encrypt_to(Vec::new(), &r).unwrap();
        w.write_all(&vec![7u8; 3 * CHUNK]).unwrap();
        let out = w.finalize().unwrap();
        let open = |bytes: &[u8]| {
            let mut back = Vec::new();
            crate::keys::decrypt_from(bytes, &id)
                .and_then(|mut rd| Ok(io::Read::read_to_end(&mut rd, &mut back)?))
        };
        assert!(open(&out).is_ok());
        let mut changed = out.clone();
        let at = changed.len() - 100;
        changed[at] ^= 1;
        assert!(open(&changed).is_err(), "a changed byte was accepted");
        assert!(
            open(&out[..out.len() - 22]).is_err(),
            "a cut message was accepted"
        );
    }
}
