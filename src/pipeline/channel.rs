//! A bounded byte pipe between two threads of the pipeline.
//!
//! The writer half sends chunks through a `sync_channel`, so a slow stage
//! blocks the one before it and memory stays at `depth × chunk` bytes.
//! A writer dropped without [`ChannelWriter::finish`] (an error or a panic
//! upstream) sends an abort marker, so the reader fails instead of taking
//! a truncated stream for a complete one.
//!
//! Chunks travel whole: a stage that only looks at the bytes (a hash)
//! passes them on with [`ChannelReader::recv_chunk`] and
//! [`ChannelWriter::send_chunk`] without copying them, and a stage that
//! produces them fills a chunk straight from its reader
//! ([`ChannelWriter::fill_from`]). Spent chunks go back to the writer, so a
//! long stream reuses the same few buffers instead of faulting in fresh
//! pages for every chunk.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};

/// Chunk size and queue depth: 16 × 256 KiB = 4 MiB in flight per pipe.
pub const CHUNK: usize = 256 * 1024;
pub const DEPTH: usize = 16;

/// The marker error a reader returns when its writer was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the stage before this one stopped before the end of the stream")]
pub struct Aborted;

enum Msg {
    Data(Vec<u8>),
    Abort,
}

pub fn pipe() -> (ChannelWriter, ChannelReader) {
    pipe_of(DEPTH)
}

/// A pipe holding at most `depth` chunks in flight.
pub fn pipe_of(depth: usize) -> (ChannelWriter, ChannelReader) {
    let (tx, rx) = sync_channel(depth);
    // Room for every chunk that can be in flight, so returning one never
    // blocks the reader.
    let (spent_tx, spent_rx) = sync_channel(depth + 2);
    (
        ChannelWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            spent: std::sync::Mutex::new(spent_rx),
        },
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
            spent: spent_tx,
        },
    )
}

pub struct ChannelWriter {
    tx: Option<SyncSender<Msg>>,
    buf: Vec<u8>,
    // (In a lock only to make the writer `Sync`, as the OpenPGP writer
    // requires; one thread uses it.)
    spent: std::sync::Mutex<Receiver<Vec<u8>>>,
}

/// The marker inside the error a writer returns when its reader is gone.
#[derive(Debug, thiserror::Error)]
#[error("the next stage of the pipeline stopped")]
pub struct Closed;

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, Closed)
}

/// Whether `e` is a reader's report that its writer was abandoned.
pub fn is_aborted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Aborted>())
}

/// Whether `e` is a writer's report that its reader is gone.
pub fn is_closed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Closed>())
}

/// Reads from `r` until `buf` is full or `r` ends; returns the bytes read.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl ChannelWriter {
    /// An empty buffer of `CHUNK` bytes' capacity: a spent one when the
    /// reader gave one back.
    pub fn buffer(&self) -> Vec<u8> {
        let mut v = self.reuse();
        v.clear();
        v
    }

    /// A buffer of `CHUNK` bytes' capacity, its old contents still there
    /// (so filling it again needs no zeroing first).
    pub fn reuse(&self) -> Vec<u8> {
        let spent = match self.spent.lock() {
            Ok(rx) => rx.try_recv(),
            Err(_) => Err(TryRecvError::Disconnected),
        };
        match spent {
            Ok(v) => v,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.buffer();
        let chunk = std::mem::replace(&mut self.buf, next);
        self.send_chunk(chunk)
    }

    /// A buffer the reader gave back, if any: a stage that relays chunks
    /// hands it on to the pipe it reads from.
    pub fn take_spent(&self) -> Option<Vec<u8>> {
        self.spent.lock().ok()?.try_recv().ok()
    }

    /// Sends `chunk` as it is (after whatever was written before it).
    pub fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_buf()?;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        match &self.tx {
            Some(tx) => tx.send(Msg::Data(chunk)).map_err(|_| closed()),
            None => Err(closed()),
        }
    }

    /// Reads up to one whole chunk from `r` straight into a buffer of the
    /// pipe and passes it to `look` before sending it. Returns the bytes
    /// read; 0 at the end of `r`.
    pub fn fill_from(
        &mut self,
        r: &mut dyn Read,
        look: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<usize> {
        self.send_buf()?;
        let mut chunk = self.reuse();
        chunk.resize(CHUNK, 0);
        let n = read_full(r, &mut chunk)?;
        chunk.truncate(n);
        look(&chunk)?;
        self.send_chunk(chunk)?;
        Ok(n)
    }

    /// Marks the stream complete; the reader then sees a clean end.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buf()?;
        self.tx = None;
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Abort);
        }
    }
}

pub struct ChannelReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    spent: SyncSender<Vec<u8>>,
}

impl ChannelReader {
    /// The next chunk whole (or what is left of the current one); `None`
    /// at a clean end. Give it back with [`ChannelReader::recycle`] or pass
    /// it on to another pipe.
    pub fn recv_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.pos < self.cur.len() {
            let rest = self.cur.split_off(self.pos);
            self.pos = self.cur.len();
            return Ok(Some(rest));
        }
        if !self.next()? {
            return Ok(None);
        }
        self.pos = 0;
        Ok(Some(std::mem::take(&mut self.cur)))
    }

    /// Hands a spent chunk back to the writer for reuse.
    pub fn recycle(&self, chunk: Vec<u8>) {
        if chunk.capacity() >= CHUNK {
            let _ = self.spent.try_send(chunk);
        }
    }

    /// Waits for the next chunk into `cur`; false at a clean end.
    fn next(&mut self) -> io::Result<bool> {
        loop {
            if self.done {
                return Ok(false);
            }
            // Wake up now and then, so a signal stops a stage that waits
            // on a quiet source (pg_dump waiting for a lock).
            match self.rx.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(Msg::Data(d)) => {
                    let spent = std::mem::replace(&mut self.cur, d);
                    self.recycle(spent);
                    self.pos = 0;
                    return Ok(true);
                }
                Ok(Msg::Abort) => return Err(io::Error::other(Aborted)),
                Err(RecvTimeoutError::Timeout) => {
                    if crate::cancel::requested() {
                        return Err(crate::cancel::interrupted());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            if !self.next()? {
                return Ok(&[]);
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_stream_arrives_whole() {
        let (mut w, mut r) = pipe();
        let t = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes().repeat(300)).unwrap();
            }
            w.finish().unwrap();
        });
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        t.join().unwrap();
        assert_eq!(all.len(), 1000 * 4 * 300);
    }

    #[test]
    fn abandoned_writer_is_an_error_not_an_end() {
        let (mut w, mut r) = pipe();
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        drop(w);
        let mut all = Vec::new();
        let e = r.read_to_end(&mut all).unwrap_err();
        assert!(e.get_ref().unwrap().is::<Aborted>());
    }

    #[test]
    fn whole_chunks_pass_through_and_come_back_for_reuse() {
        let (mut w, mut r) = pipe();
        let (mut w2, mut r2) = pipe();
        let t = std::thread::spawn(move || {
            let mut src = &vec![7u8; CHUNK * 3 + 5][..];
            let mut seen = 0;
            while w
                .fill_from(&mut src, &mut |c| {
                    seen += c.len();
                    Ok(())
                })
                .unwrap()
                > 0
            {}
            w.finish().unwrap();
            seen
        });
        let relay = std::thread::spawn(move || {
            while let Some(c) = r.recv_chunk().unwrap() {
                w2.send_chunk(c).unwrap();
            }
            w2.finish().unwrap();
        });
        let mut all = Vec::new();
        r2.read_to_end(&mut all).unwrap();
        assert_eq!(t.join().unwrap(), CHUNK * 3 + 5);
        relay.join().unwrap();
        assert_eq!(all, vec![7u8; CHUNK * 3 + 5]);
    }

    #[test]
    fn dropped_reader_breaks_the_writer() {
        let (mut w, r) = pipe();
        drop(r);
        let e = w.write_all(&vec![0u8; CHUNK * 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
