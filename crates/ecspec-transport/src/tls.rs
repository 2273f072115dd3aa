//! TLS between edge and cloud (rustls on the ring provider): the cloud's [`TlsServer`] from a
//! PEM certificate chain and key, the edge's [`TlsClient`] trusting a PEM CA file.
//!
//! A test certificate for a cloud on this machine (valid for `localhost` and 127.0.0.1):
//!
//! ```sh
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
//!   -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
//!   -addext basicConstraints=critical,CA:FALSE -keyout cloud.key -out cloud.crt
//! ```
//!
//! then `ecspec cloud serve --tls-cert cloud.crt --tls-key cloud.key` and
//! `ecspec generate --cloud 127.0.0.1:7878 --tls-ca cloud.crt …`.
//!
//! A TLS cloud answers a plaintext edge with one plaintext error frame saying TLS is required
//! ([`looks_like_tls`] tells the two apart by the first byte) and closes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The edge's side of a TLS connection over `S`.
pub type ClientStream<S> = tokio_rustls::client::TlsStream<S>;
/// The cloud's side of a TLS connection over `S`.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;

/// Why a TLS setting could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{what} {path}: {why}")]
    Pem {
        /// Which file (`--tls-cert`, `--tls-key`, `--tls-ca`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the certificate/key pair or the CA set.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The name the edge checks the cloud's certificate against is not a DNS name or address.
    #[error("`{0}` is not a server name a certificate can be checked against")]
    ServerName(String),
}

fn pem_err(what: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// rustls on *ring*: its key exchange has no post-quantum group (hence the deprecation), but
/// aws-lc-rs, which has one, needs cmake and a C toolchain setup this project does not require.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cloud's TLS: certificate chain and private key.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// From PEM files: `cert` holds the chain (leaf first), `key` the private key (PKCS#8,
    /// PKCS#1 or SEC1).
    ///
    /// # Errors
    /// Unreadable files, no certificate or key in them, a key that does not fit the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = read_certs("--tls-cert", cert)?;
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("--tls-key", key, e))?;
        Self::new(certs, key_der).map_err(|e| match e {
            TlsError::Config(why) => TlsError::Config(format!(
                "--tls-cert {} with --tls-key {}: {why}",
                cert.display(),
                key.display()
            )),
            other => other,
        })
    }

    /// From DER values.
    ///
    /// # Errors
    /// rustls refuses the pair.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server side of the TLS handshake over `stream`.
    ///
    /// # Errors
    /// The handshake failed (not TLS, no common version or cipher, the peer left).
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<ServerStream<S>> {
        self.acceptor.accept(stream).await
    }
}

/// The edge's TLS: the CA it trusts and the name it checks the cloud's certificate against.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({:?})", self.name)
    }
}

impl TlsClient {
    /// Trusting the certificates in the PEM file `ca`, checking the cloud's certificate
    /// against `server_name` (a DNS name or an IP address: the host part of `--cloud`).
    ///
    /// # Errors
    /// Unreadable or empty CA file, a certificate rustls cannot use, a bad server name.
    pub fn from_ca_file(ca: &Path, server_name: &str) -> Result<Self, TlsError> {
        Self::new(read_certs("--tls-ca", ca)?, server_name)
    }

    /// Trusting `roots`.
    ///
    /// # Errors
    /// A certificate rustls cannot use as a root, a bad server name.
    pub fn new(roots: Vec<CertificateDer<'static>>, server_name: &str) -> Result<Self, TlsError> {
        let mut store = RootCertStore::empty();
        for c in roots {
            store
                .add(c)
                .map_err(|e| TlsError::Config(format!("a CA certificate: {e}")))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Runs the client side of the TLS handshake over `stream`.
    ///
    /// # Errors
    /// The handshake failed: the cloud does not speak TLS, its certificate is not signed by
    /// the CA or not for the server name.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<ClientStream<S>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// Whether a connection's first byte opens a TLS handshake (a TLS record of type 22,
/// handshake). An ECSpec frame starts with the high byte of its length, 0 for every frame up
/// to [`ecspec_proto::MAX_FRAME_LEN`] (16 MiB), so the two never meet.
pub fn looks_like_tls(first_byte: u8) -> bool {
    first_byte == 0x16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_never_looks_like_tls() {
        let frame = ecspec_proto::encode_frame(
            &ecspec_proto::Message::Close(ecspec_proto::Close::default()),
            1,
        )
        .unwrap();
        assert!(!looks_like_tls(frame[0]));
        assert!(ecspec_proto::MAX_FRAME_LEN < 0x1600_0000);
        assert!(looks_like_tls(0x16));
    }

    #[test]
    fn bad_pem_files_name_the_flag_and_the_file() {
        let dir = std::env::temp_dir().join(format!("ecspec-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsClient::from_ca_file(&empty, "localhost")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tls-ca ") && e.ends_with("no CERTIFICATE block in the file"),
            "{e}"
        );
        let e = TlsServer::from_pem_files(&dir.join("missing.crt"), &empty)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tls-cert ") && e.contains("missing.crt"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
