//! A [`Connection`] reads and writes whole protocol [`Message`]s over an async byte stream —
//! a TCP socket on the cloud, the emulated link's stream on the edge — owning the read
//! buffer (mini-redis style: "incomplete" is a state of the buffer, not an error).

pub mod tls;

use std::time::Duration;

use bytes::BytesMut;
use ecspec_proto::{decode_eof, decode_frame, encode_frame, FrameError, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed.
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// Nothing arrived in time.
    #[error("no frame within {0:?}")]
    Timeout(Duration),
}

/// A framed message connection.
pub struct Connection<S> {
    stream: S,
    buf: BytesMut,
    next_request_id: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            next_request_id: 1,
        }
    }

    /// Reads the next whole message. `Ok(None)` is a clean close by the peer between frames.
    ///
    /// # Errors
    /// Malformed frames, I/O errors, a close in the middle of a frame, or no frame within
    /// `timeout` (when given).
    pub async fn read_message(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u32, Message)>, TransportError> {
        let fut = self.read_inner();
        match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| TransportError::Timeout(t))?,
            None => fut.await,
        }
    }

    async fn read_inner(&mut self) -> Result<Option<(u32, Message)>, TransportError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                // A close between frames is clean; inside one, decode_eof says Truncated.
                return Ok(decode_eof(&mut self.buf)?);
            }
        }
    }

    /// Writes one message (a fresh request id) and flushes it. Returns the request id.
    pub async fn write_message(&mut self, msg: &Message) -> Result<u32, TransportError> {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.reply(msg, id).await?;
        Ok(id)
    }

    /// Writes one message with the given request id (a reply carries its request's id).
    pub async fn reply(&mut self, msg: &Message, request_id: u32) -> Result<(), TransportError> {
        let frame = encode_frame(msg, request_id)?;
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Shuts the write side down (the peer reads a clean close).
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.stream.shutdown().await?;
        Ok(())
    }
}
