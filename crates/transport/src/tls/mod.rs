//! TLS under the pairbroker handshake, with rustls (its `ring` provider, so no C library).
//!
//! A server with TLS ([`ServerTls`]) takes the TLS handshake first, then the pairbroker
//! handshake and its access token inside it, so that the token never crosses the network in
//! clear. A client ([`ClientTls`]) trusts the CA certificates of one PEM file and checks the
//! server's certificate against the host part of the address it dials: an IP address against
//! the certificate's IP names, a host name against its DNS names.
//!
//! Each side tells the other, in one clear line, when only one of them has TLS: a TLS server
//! answers a plaintext pairbroker client with [`crate::handshake::TLS_REQUIRED`], and a
//! plaintext server closes a connection whose first byte is [`TLS_HANDSHAKE_RECORD`].
//!
//! [`TlsFiles`] finds the three PEM files of a program, one by one or in a directory, and
//! [`write_development_files`] writes a development CA and a certificate for this machine into
//! one (`broker tls-init DIR`).

mod development;
mod stream;

pub use development::{write_development_files, InitError, DEVELOPMENT_NAMES};
pub use stream::Stream;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::handshake::{self, HANDSHAKE_TIMEOUT, MAGIC};
use crate::ConnectError;

/// The CA certificate's file in a `--tls-dir`.
pub const CA_FILE: &str = "ca.pem";
/// The server certificate's file in a `--tls-dir`.
pub const CERT_FILE: &str = "cert.pem";
/// The server's private key's file in a `--tls-dir`.
pub const KEY_FILE: &str = "key.pem";

/// The first byte of every TLS connection: the content type of a handshake record, which
/// carries the ClientHello. A pairbroker client starts with [`MAGIC`] instead.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{} holds no certificate: expected PEM, a block that begins with -----BEGIN CERTIFICATE-----", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("{} holds no private key: expected PEM, a block that begins with -----BEGIN PRIVATE KEY-----", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not well-formed PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and the key cannot serve together (e.g. the key is another
    /// certificate's, or of a kind rustls does not take).
    #[error("cannot serve TLS with the certificate in {} and the key in {}: {reason}", cert.display(), key.display())]
    Unusable {
        /// The certificate's file.
        cert: PathBuf,
        /// The key's file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A CA file's certificates cannot be trusted as CAs.
    #[error("cannot trust the CA in {}: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        error => TlsError::BadPem {
            path: path.to_owned(),
            reason: error.to_string(),
        },
    })
}

/// The one crypto provider: ring, named rather than left to rustls's process-wide default, so
/// that no other crate's choice can change it.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a program's TLS files are. A program that serves needs `cert` and `key`; a program
/// that dials needs `ca`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates to trust when dialling (PEM).
    pub ca: Option<PathBuf>,
    /// The certificate to serve with, its chain after it (PEM).
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// The three files of `broker tls-init DIR`: `DIR/ca.pem`, `DIR/cert.pem`, `DIR/key.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: Some(dir.join(CA_FILE)),
            cert: Some(dir.join(CERT_FILE)),
            key: Some(dir.join(KEY_FILE)),
        }
    }

    /// The files of a command line: those of `--tls-dir` if given, else the ones given one by
    /// one.
    pub fn from_options(
        dir: Option<&Path>,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Self {
        match dir {
            Some(dir) => Self::in_dir(dir),
            None => Self {
                ca: ca.map(Path::to_owned),
                cert: cert.map(Path::to_owned),
                key: key.map(Path::to_owned),
            },
        }
    }

    /// How to serve: TLS with the certificate and key, if both are given.
    pub fn server(&self) -> Result<Option<ServerTls>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => ServerTls::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// How to dial: TLS trusting the CA, if given.
    pub fn client(&self) -> Result<Option<ClientTls>, TlsError> {
        self.ca.as_deref().map(ClientTls::load).transpose()
    }
}

/// A server's TLS: its certificate and key, loaded once.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    cert: Arc<Path>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls({})", self.cert.display())
    }
}

/// What a TLS server found at the start of a connection instead of a TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsRefusal {
    /// A pairbroker client without TLS; it was told that TLS is required.
    #[error("a pairbroker client without TLS (it needs --tls-ca or --tls-dir)")]
    PlaintextPairbroker,
    /// Something that speaks neither TLS nor pairbroker (Go's net/rpc?).
    #[error("a client that does not speak TLS (Go's net/rpc cannot)")]
    NotTls,
    /// The TLS handshake failed, e.g. because the client does not trust the certificate.
    #[error("the TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The client said nothing, or took too long.
    #[error("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
}

impl ServerTls {
    /// Loads the certificate chain in `cert` and the private key in `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = certificates(cert)?;
        let private_key = private_key(key)?;
        let unusable = |error: rustls::Error| TlsError::Unusable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: error.to_string(),
        };
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(unusable)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert: Arc::from(cert),
        })
    }

    /// Takes the TLS handshake of a new connection. A pairbroker client that opens without
    /// TLS is answered [`handshake::TLS_REQUIRED`], so that it can say what to do.
    pub async fn accept(&self, mut tcp: TcpStream) -> Result<Stream, TlsRefusal> {
        let exchange = async {
            let mut first = [0u8; 1];
            // Peeked, not read: the TLS handshake must see the byte too.
            let peeked = tcp.peek(&mut first).await.map_err(TlsRefusal::Handshake)?;
            if peeked == 0 {
                return Err(TlsRefusal::Handshake(io::ErrorKind::UnexpectedEof.into()));
            }
            match first[0] {
                TLS_HANDSHAKE_RECORD => self
                    .acceptor
                    .accept(tcp)
                    .await
                    .map(|tls| Stream::Tls(Box::new(tls.into())))
                    .map_err(TlsRefusal::Handshake),
                byte if byte == MAGIC[0] => {
                    handshake::require_tls(&mut tcp).await;
                    Err(TlsRefusal::PlaintextPairbroker)
                }
                _ => Err(TlsRefusal::NotTls),
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| TlsRefusal::TimedOut)?
    }
}

/// A client's TLS: the CA certificates it trusts, loaded once.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    ca: Arc<Path>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTls({})", self.ca.display())
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca` (a PEM file), and those only.
    pub fn load(ca: &Path) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for certificate in certificates(ca)? {
            roots.add(certificate).map_err(|error| TlsError::BadCa {
                path: ca.to_owned(),
                reason: error.to_string(),
            })?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::BadCa {
                path: ca.to_owned(),
                reason: error.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            ca: Arc::from(ca),
        })
    }

    /// The CA file trusted.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Takes the TLS handshake on `tcp`, a new connection to `address` (`host:port`), whose
    /// certificate must name `host`.
    pub async fn connect(&self, address: &str, tcp: TcpStream) -> Result<Stream, ConnectError> {
        let host = host_of(address);
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::Certificate {
                address: address.to_owned(),
                reason: format!(
                    "{host:?} is neither an IP address nor a host name a certificate can name"
                ),
            })?;
        let handshake = self.connector.connect(name, tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls.into()))),
            Ok(Err(error)) => Err(self.refused(address, host, error)),
            Err(_) => Err(ConnectError::Handshake {
                address: address.to_owned(),
                source: handshake::HandshakeError::TimedOut,
            }),
        }
    }

    /// Why a TLS handshake with `address` failed, in words that say what to do.
    fn refused(&self, address: &str, host: &str, error: io::Error) -> ConnectError {
        let address = address.to_owned();
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let ca = self.ca.display();
        let reason = match rustls_error {
            Some(rustls::Error::InvalidCertificate(problem)) => match problem {
                rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature => {
                    format!("its certificate is not signed by the CA in {ca}")
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    format!("its certificate is not for {host}: dial it by a name or an address its certificate holds")
                }
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => {
                    "its certificate has expired".to_owned()
                }
                other => format!("its certificate was refused: {other:?}"),
            },
            // A plaintext server closes the connection on a ClientHello, or answers it with
            // bytes that are not TLS.
            Some(rustls::Error::InvalidMessage(_)) | None => {
                return ConnectError::NoTls { address };
            }
            Some(other) => format!("the TLS handshake failed: {other}"),
        };
        ConnectError::Certificate { address, reason }
    }
}

/// The host part of `host:port`, without the brackets of an IPv6 address.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_be_used_are_named_with_what_is_wrong() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tls");
        let files = write_development_files(&dir).unwrap();
        let (ca, cert, key) = (
            files.ca.clone().unwrap(),
            files.cert.clone().unwrap(),
            files.key.clone().unwrap(),
        );
        let other = write_development_files(&temp.path().join("other")).unwrap();
        let other_key = other.key.unwrap();
        let garbage = temp.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all\n").unwrap();
        let broken = temp.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n").unwrap();
        let missing = temp.path().join("missing.pem");

        let server = |cert: &Path, key: &Path| ServerTls::load(cert, key).unwrap_err().to_string();
        let client = |ca: &Path| ClientTls::load(ca).unwrap_err().to_string();
        for (said, expected) in [
            (
                server(&missing, &key),
                format!("cannot read {}", missing.display()),
            ),
            (
                server(&cert, &missing),
                format!("cannot read {}", missing.display()),
            ),
            (
                server(&garbage, &key),
                format!("{} holds no certificate", garbage.display()),
            ),
            (
                server(&cert, &garbage),
                format!("{} holds no private key", garbage.display()),
            ),
            (
                server(&cert, &cert),
                format!("{} holds no private key", cert.display()),
            ),
            (
                server(&broken, &key),
                format!("{} is not well-formed PEM", broken.display()),
            ),
            (
                server(&cert, &other_key),
                format!(
                    "cannot serve TLS with the certificate in {} and the key in {}",
                    cert.display(),
                    other_key.display()
                ),
            ),
            (
                client(&missing),
                format!("cannot read {}", missing.display()),
            ),
            (
                client(&key),
                format!("{} holds no certificate", key.display()),
            ),
        ] {
            assert!(said.contains(&expected), "{said:?} should say {expected:?}");
        }
        assert!(ClientTls::load(&ca).is_ok() && ServerTls::load(&cert, &key).is_ok());
        let again = write_development_files(&dir).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn a_tls_dir_names_the_three_files_and_wins_over_single_files() {
        let dir = Path::new("/etc/pb");
        let files = TlsFiles::from_options(Some(dir), Some(Path::new("/x/ca.pem")), None, None);
        assert_eq!(files, TlsFiles::in_dir(dir));
        assert_eq!(files.cert.unwrap(), dir.join("cert.pem"));
        let single = TlsFiles::from_options(None, Some(Path::new("/x/ca.pem")), None, None);
        assert_eq!(single.ca.as_deref(), Some(Path::new("/x/ca.pem")));
        assert!(
            single.server().unwrap().is_none(),
            "no certificate, no TLS served"
        );
    }

    #[test]
    fn the_host_checked_is_the_host_dialled() {
        assert_eq!(host_of("127.0.0.1:8030"), "127.0.0.1");
        assert_eq!(host_of("localhost:8030"), "localhost");
        assert_eq!(host_of("[::1]:8030"), "::1");
    }
}
