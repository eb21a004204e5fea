//! A connection whose peer stops reading is dropped: a write that makes no
//! progress for [`WRITE_STALL`] fails, and hyper closes the connection.
//! Without it a client that never reads holds its socket, its buffers and
//! (for a cluster pull or a blocked playlist) its response forever: TCP
//! keeps a zero window open indefinitely.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a write may wait for the peer to read.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// `inner` with a deadline on writes that do not progress.
pub struct StallGuard<I> {
    inner: I,
    limit: Duration,
    /// Armed while a write waits.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> StallGuard<I> {
    pub fn new(inner: I, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            deadline: None,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// A write (or flush) is pending: fails once it has waited too long.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.deadline = None;
                metrics::counter!("streamd_http_write_stalls_total").increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer read nothing for {limit:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.pending(cx),
            ready => {
                self.deadline = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_fails_the_write_and_one_that_reads_does_not() {
        // A pipe of 64 bytes that nobody reads: the write waits, then fails.
        let (a, _b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_secs(10));
        let started = Instant::now();
        let err = guarded.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));

        // A slow reader that keeps reading never trips it.
        let (a, mut b) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match tokio::io::AsyncReadExt::read(&mut b, &mut buf).await {
                    Ok(0) | Err(_) => return sink.len(),
                    Ok(n) => sink.extend_from_slice(&buf[..n]),
                }
            }
        });
        let mut guarded = StallGuard::new(a, Duration::from_secs(10));
        guarded.write_all(&[1u8; 256]).await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap(), 256);
    }
}
