//! The client side of the management request: switch (or query) a running cloud's active
//! target version over its own TCP port. Only loopback peers are allowed, so this runs on the
//! cloud machine.

use std::net::SocketAddr;
use std::time::Duration;

use ecspec_proto::{Close, ErrorCode, Message, SetVersion, VersionAck};
use ecspec_transport::{Connection, TransportError};
use tokio::net::TcpStream;

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Connecting, sending or receiving failed.
    #[error("management connection to {addr}: {source}")]
    Transport {
        addr: SocketAddr,
        source: TransportError,
    },
    /// The cloud refused the request (unknown version, non-loopback peer, …).
    #[error("the cloud at {addr} refused: {message} ({code:?})")]
    Refused {
        addr: SocketAddr,
        code: ErrorCode,
        message: String,
    },
    /// The cloud answered something else, or closed the connection.
    #[error("the cloud at {addr} answered {answer} to SetVersion")]
    Unexpected { addr: SocketAddr, answer: String },
}

/// Asks the cloud at `addr` to make `version` the version new sessions get (an empty
/// `version` only queries), and returns its [`VersionAck`].
///
/// # Errors
/// [`AdminError`]; nothing changes on the cloud unless a `VersionAck` came back.
pub async fn set_version(
    addr: SocketAddr,
    version: &str,
    timeout: Duration,
) -> Result<VersionAck, AdminError> {
    let t = |source: TransportError| AdminError::Transport { addr, source };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| t(TransportError::Timeout(timeout)))?
        .map_err(|e| t(e.into()))?;
    let mut conn = Connection::new(stream);
    conn.write_message(&Message::SetVersion(SetVersion {
        version: version.to_string(),
    }))
    .await
    .map_err(t)?;
    let answer = conn.read_message(Some(timeout)).await.map_err(t)?;
    let _ = conn.write_message(&Message::Close(Close {})).await;
    match answer {
        Some((_, Message::VersionAck(ack))) => Ok(ack),
        Some((_, Message::ErrorReply(e))) => Err(AdminError::Refused {
            addr,
            code: e.code(),
            message: e.message,
        }),
        Some((_, other)) => Err(AdminError::Unexpected {
            addr,
            answer: format!("{:?}", other.message_type()),
        }),
        None => Err(AdminError::Unexpected {
            addr,
            answer: "a closed connection".into(),
        }),
    }
}
