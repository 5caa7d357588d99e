//! From an async download to the blocking `Read` the pipeline consumes: a
//! task on the store's runtime sends chunks through a small bounded
//! channel, so memory stays at a few chunks whatever the object's size.

use std::io::{self, Read};

pub type Sender = tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>;

pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

/// A channel for a download task and the reader that drains it.
pub fn channel() -> (Sender, ChunkReader) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    (
        tx,
        ChunkReader {
            rx,
            cur: bytes::Bytes::new(),
        },
    )
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}
