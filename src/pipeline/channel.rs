//! A bounded byte pipe between two threads of the pipeline.
//!
//! The writer half sends chunks through a `sync_channel`, so a slow stage
//! blocks the one before it and memory stays at `depth × chunk` bytes.
//! A writer dropped without [`ChannelWriter::finish`] (an error or a panic
//! upstream) sends an abort marker, so the reader fails instead of taking
//! a truncated stream for a complete one.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};

/// Chunk size and queue depth: 16 × 256 KiB = 4 MiB in flight per pipe.
pub const CHUNK: usize = 256 * 1024;
const DEPTH: usize = 16;

/// The marker error a reader returns when its writer was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the stage before this one stopped before the end of the stream")]
pub struct Aborted;

enum Msg {
    Data(Vec<u8>),
    Abort,
}

pub fn pipe() -> (ChannelWriter, ChannelReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        ChannelWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
        },
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        },
    )
}

pub struct ChannelWriter {
    tx: Option<SyncSender<Msg>>,
    buf: Vec<u8>,
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the next stage of the pipeline stopped",
    )
}

impl ChannelWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) => tx.send(Msg::Data(chunk)).map_err(|_| closed()),
            None => Err(closed()),
        }
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
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            // Wake up now and then, so a signal stops a stage that waits
            // on a quiet source (pg_dump waiting for a lock).
            match self.rx.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::Abort) => return Err(io::Error::other(Aborted)),
                Err(RecvTimeoutError::Timeout) => {
                    if crate::cancel::requested() {
                        return Err(crate::cancel::interrupted());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
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
    fn dropped_reader_breaks_the_writer() {
        let (mut w, r) = pipe();
        drop(r);
        let e = w.write_all(&vec![0u8; CHUNK * 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
