//! The compression stage: xz (multithreaded liblzma, the same format as
//! `xz -T0`, decoded on several threads too) or zstd (multithreaded, the same format as `zstd -T0`), so
//! `xz -d` and `zstd -d` open every payload.

use std::io::{self, BufRead, Read, Write};

use crate::profile::{Algorithm, Compression};
use crate::progress::Progress;

/// The compressor, reporting to `progress` the plaintext it has taken in
/// (zstd) or, for xz, actually compressed: multithreaded xz takes a
/// whole block per thread (12 MiB at -6) in one gulp, so its intake runs
/// far ahead of its work and moves in steps.
pub enum Compressor<'p, W: Write> {
    Xz(XzWriter<'p, W>),
    Zstd(zstd::stream::write::Encoder<'static, W>, &'p dyn Progress),
}

impl<'p, W: Write> Compressor<'p, W> {
    pub fn new(inner: W, c: &Compression, progress: &'p dyn Progress) -> io::Result<Self> {
        let threads = c.effective_threads();
        Ok(match c.algorithm {
            Algorithm::Xz => Compressor::Xz(XzWriter {
                stream: RawXz::encoder_mt(threads, c.level)?,
                inner,
                out: Vec::with_capacity(XZ_OUT),
                progress,
                reported: 0,
            }),
            Algorithm::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, c.level as i32)?;
                if threads > 1 {
                    e.multithread(threads)?;
                }
                e.include_checksum(true)?;
                Compressor::Zstd(e, progress)
            }
        })
    }

    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Xz(e) => e.finish(),
            Compressor::Zstd(e, _) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Xz(e) => e.write(data),
            Compressor::Zstd(e, progress) => {
                let n = e.write(data)?;
                progress.advance(n as u64);
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing xz ends a block and costs ratio; the pipeline never needs
        // it, so only the inner writer is flushed at `finish`.
        Ok(())
    }
}

const XZ_OUT: usize = 256 * 1024;

/// How long liblzma may wait for a free thread before it returns, so the
/// progress of the threads at work can be read meanwhile.
const XZ_PROGRESS_MS: u32 = 200;

/// The xz block size. From a dictionary of 8 MiB up (presets 5 to 9):
/// one and a half times the dictionary, where `xz -T` takes three times.
/// Each thread holds its input block, and liblzma's output queue keeps up
/// to two compressed blocks a thread, so this halves the buffers (at -6, 2
/// threads: 72 MiB instead of 144) for output about 0.6 % larger (on the
/// benchmark's 270 MB dump; blocks are compressed independently, and a
/// block still lets most matches reach back as far as the dictionary
/// does). Below that, memory is small anyway: liblzma's default (0), as
/// `xz -T` has it.
fn block_size(preset: u32) -> u64 {
    // SAFETY: plain C data, all-zero is a valid value to be overwritten.
    let mut o: liblzma_sys::lzma_options_lzma = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer; returns true (nonzero) for an unknown preset,
    // which `lzma_stream_encoder_mt` then reports.
    if unsafe { liblzma_sys::lzma_lzma_preset(&mut o, preset) } != 0 || o.dict_size < 8 << 20 {
        return 0;
    }
    u64::from(o.dict_size) * 3 / 2
}

/// liblzma's multithreaded encoder, straight over its C interface: the
/// crate's `Stream` does not give `lzma_get_progress`, the only view of
/// how far the threads have come inside their blocks.
struct RawXz(liblzma_sys::lzma_stream);

// SAFETY: the stream is used by one thread at a time (liblzma's own
// threads synchronise with it internally).
unsafe impl Send for RawXz {}

impl RawXz {
    fn encoder_mt(threads: u32, preset: u32) -> io::Result<Self> {
        // SAFETY: both structs are plain C data for which all-zero is the
        // documented initial state (LZMA_STREAM_INIT, an empty lzma_mt).
        let mut mt: liblzma_sys::lzma_mt = unsafe { std::mem::zeroed() };
        mt.threads = threads.max(1);
        mt.preset = preset;
        mt.check = liblzma_sys::LZMA_CHECK_CRC64;
        mt.timeout = XZ_PROGRESS_MS;
        mt.block_size = block_size(preset);
        let mut s = RawXz(unsafe { std::mem::zeroed() });
        // SAFETY: a zeroed stream and valid options; on failure liblzma
        // leaves nothing allocated that `lzma_end` (on drop) cannot free.
        let ret = unsafe { liblzma_sys::lzma_stream_encoder_mt(&mut s.0, &mt) };
        if ret != liblzma_sys::LZMA_OK {
            return Err(io::Error::other(format!(
                "cannot start the xz encoder (liblzma error {ret}; level {preset}, {threads} threads)"
            )));
        }
        Ok(s)
    }

    /// Runs the encoder over `input`, appending what it makes to `out`'s
    /// spare capacity; returns the input taken and whether the stream ended.
    fn code(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        action: liblzma_sys::lzma_action,
    ) -> io::Result<(usize, bool)> {
        let spare = out.spare_capacity_mut();
        let room = spare.len();
        self.0.next_in = input.as_ptr();
        self.0.avail_in = input.len();
        self.0.next_out = spare.as_mut_ptr().cast();
        self.0.avail_out = room;
        // SAFETY: next_in/avail_in and next_out/avail_out describe live
        // buffers for the length of the call; liblzma writes only there.
        let ret = unsafe { liblzma_sys::lzma_code(&mut self.0, action) };
        let taken = input.len() - self.0.avail_in;
        let made = room - self.0.avail_out;
        // SAFETY: liblzma initialised exactly `made` bytes of the spare room.
        unsafe { out.set_len(out.len() + made) };
        self.0.next_in = std::ptr::null();
        self.0.avail_in = 0;
        self.0.next_out = std::ptr::null_mut();
        self.0.avail_out = 0;
        match ret {
            liblzma_sys::LZMA_OK => Ok((taken, false)),
            liblzma_sys::LZMA_STREAM_END => Ok((taken, true)),
            e => Err(io::Error::other(format!(
                "xz compression failed (liblzma error {e})"
            ))),
        }
    }

    /// The plaintext the encoder has compressed so far (in the threads'
    /// blocks too), at most what it has taken in.
    fn progress_in(&mut self) -> u64 {
        let (mut done_in, mut done_out) = (0u64, 0u64);
        // SAFETY: an initialised stream, used by this thread only.
        unsafe { liblzma_sys::lzma_get_progress(&mut self.0, &mut done_in, &mut done_out) };
        done_in
    }
}

impl Drop for RawXz {
    fn drop(&mut self) {
        // SAFETY: an initialised (or zeroed) stream, freed once.
        unsafe { liblzma_sys::lzma_end(&mut self.0) }
    }
}

/// An xz encoder over liblzma's stream. Unlike the crate's `XzEncoder`,
/// dropping it unfinished (an error, SIGTERM) does not first compress
/// everything it has taken in, which at xz -9 can take minutes: the
/// stream just ends, and liblzma stops its threads within a few
/// kilobytes of input.
pub struct XzWriter<'p, W: Write> {
    stream: RawXz,
    inner: W,
    out: Vec<u8>,
    progress: &'p dyn Progress,
    /// What `progress` has been told so far.
    reported: u64,
}

impl<W: Write> XzWriter<'_, W> {
    fn run(&mut self, input: &[u8], action: liblzma_sys::lzma_action) -> io::Result<(usize, bool)> {
        self.out.clear();
        let r = self.stream.code(input, &mut self.out, action)?;
        self.inner.write_all(&self.out)?;
        let done = self.stream.progress_in();
        if done > self.reported {
            self.progress.advance(done - self.reported);
            self.reported = done;
        }
        Ok(r)
    }

    fn finish(mut self) -> io::Result<W> {
        while !self.run(&[], liblzma_sys::LZMA_FINISH)?.1 {}
        let total = self.stream.0.total_in;
        if total > self.reported {
            self.progress.advance(total - self.reported);
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for XzWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        loop {
            // (Returns with nothing taken when a wait for a thread timed
            // out: the progress was read, and it waits again.)
            let (taken, _) = self.run(data, liblzma_sys::LZMA_RUN)?;
            if taken > 0 {
                return Ok(taken);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A decompressing reader for `algorithm`. It reads `inner`'s buffer in
/// place and consumes exactly the compressed stream, so what follows it is
/// left in `inner`.
pub fn decompressor<'a, R: BufRead + 'a>(
    inner: R,
    algorithm: Algorithm,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match algorithm {
        Algorithm::Xz => Box::new(liblzma::bufread::XzDecoder::new_stream(
            inner,
            xz_decoder()?,
        )),
        Algorithm::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(inner)?.single_frame())
        }
    })
}

/// liblzma's multi-threaded decoder: the blocks of a stream that cellar
/// (or `xz -T`) wrote decode in parallel, like `xz -d -T0`. A stream of
/// one block decodes on one thread, as before.
fn xz_decoder() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads as u32)
        // Above this, liblzma decodes on fewer threads rather than use
        // more memory (a block of xz -9 needs about 200 MiB in flight).
        .memlimit_threading(512 << 20)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_round_trip() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for algorithm in [Algorithm::Xz, Algorithm::Zstd] {
            let c = Compression {
                algorithm,
                level: 1,
                threads: 2,
            };
            let mut w = Compressor::new(Vec::new(), &c, &crate::progress::NoProgress).unwrap();
            w.write_all(&data).unwrap();
            let packed = w.finish().unwrap();
            assert!(packed.len() < data.len() / 4);
            let mut back = Vec::new();
            decompressor(&packed[..], algorithm)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}

#[cfg(test)]
mod block_tests {
    #[test]
    fn only_big_dictionaries_get_smaller_blocks() {
        assert_eq!(super::block_size(1), 0);
        assert_eq!(super::block_size(4), 0);
        assert_eq!(super::block_size(6), 12 << 20);
        assert_eq!(super::block_size(9), 96 << 20);
        assert_eq!(
            super::block_size(6 | liblzma_sys::LZMA_PRESET_EXTREME),
            12 << 20
        );
    }
}
