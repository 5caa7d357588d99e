//! The compression stage: xz (multithreaded liblzma, the same format as
//! `xz -T0`, decoded on several threads too) or zstd (multithreaded, the same format as `zstd -T0`), so
//! `xz -d` and `zstd -d` open every payload.

use std::io::{self, BufRead, Read, Write};

use crate::profile::{Algorithm, Compression};

pub enum Compressor<W: Write> {
    Xz(XzWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(inner: W, c: &Compression) -> io::Result<Self> {
        let threads = c.effective_threads();
        Ok(match c.algorithm {
            Algorithm::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .preset(c.level)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(io::Error::other)?;
                Compressor::Xz(XzWriter {
                    stream,
                    inner,
                    out: Vec::with_capacity(XZ_OUT),
                })
            }
            Algorithm::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(inner, c.level as i32)?;
                if threads > 1 {
                    e.multithread(threads)?;
                }
                e.include_checksum(true)?;
                Compressor::Zstd(e)
            }
        })
    }

    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Xz(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Xz(e) => e.write(data),
            Compressor::Zstd(e) => e.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing xz ends a block and costs ratio; the pipeline never needs
        // it, so only the inner writer is flushed at `finish`.
        Ok(())
    }
}

const XZ_OUT: usize = 256 * 1024;

/// An xz encoder over liblzma's stream. Unlike the crate's `XzEncoder`,
/// dropping it unfinished (an error, SIGTERM) does not first compress
/// everything it has taken in, which at xz -9 can take minutes: the
/// stream just ends, and liblzma stops its threads within a few
/// kilobytes of input.
pub struct XzWriter<W: Write> {
    stream: liblzma::stream::Stream,
    inner: W,
    out: Vec<u8>,
}

impl<W: Write> XzWriter<W> {
    fn run(&mut self, input: &[u8], action: liblzma::stream::Action) -> io::Result<(usize, bool)> {
        let before = self.stream.total_in();
        self.out.clear();
        let status = self
            .stream
            .process_vec(input, &mut self.out, action)
            .map_err(io::Error::other)?;
        self.inner.write_all(&self.out)?;
        let taken = (self.stream.total_in() - before) as usize;
        Ok((taken, status == liblzma::stream::Status::StreamEnd))
    }

    fn finish(mut self) -> io::Result<W> {
        while !self.run(&[], liblzma::stream::Action::Finish)?.1 {}
        Ok(self.inner)
    }
}

impl<W: Write> Write for XzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        loop {
            let (taken, _) = self.run(data, liblzma::stream::Action::Run)?;
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
            let mut w = Compressor::new(Vec::new(), &c).unwrap();
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
