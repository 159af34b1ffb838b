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

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// The names the development certificate of [`write_development_files`] is valid for: this
/// machine, by its loopback addresses and by name.
pub const DEVELOPMENT_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

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

/// A connection, in TLS or plain TCP: what framing and the handshake run over.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; boxed, as rustls's state is large beside a socket.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Whether the connection is in TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Self {
        Stream::Plain(tcp)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why `broker tls-init` could not write its files.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file is there already: it may be in use, so it is never overwritten.
    #[error("{} already exists; tls-init never overwrites a file: remove it, or choose another directory", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or the directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// rcgen could not make the certificates.
    #[error("cannot generate the certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Writes into `dir` (created if missing) a development CA certificate (`ca.pem`), and a server
/// certificate it signed for [`DEVELOPMENT_NAMES`] (`cert.pem`) with its private key
/// (`key.pem`, readable by its owner only). The CA's own key is not kept: no other certificate
/// can ever be signed with it, so trusting `ca.pem` trusts this one certificate. Refuses to
/// overwrite any of the three files.
pub fn write_development_files(dir: &Path) -> Result<TlsFiles, InitError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let files = TlsFiles::in_dir(dir);
    let paths = [&files.ca, &files.cert, &files.key].map(|path| path.clone().unwrap_or_default());
    if let Some(path) = paths.iter().find(|path| path.exists()) {
        return Err(InitError::Exists { path: path.clone() });
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pairbroker development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(DEVELOPMENT_NAMES.map(str::to_owned).to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "pairbroker on this machine");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Servers and clients alike: a factory serves the broker's calls and dials the broker.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key)?;

    std::fs::create_dir_all(dir).map_err(|source| InitError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_new(&paths[0], ca.pem().as_bytes(), false)?;
    write_new(&paths[1], cert.pem().as_bytes(), false)?;
    write_new(&paths[2], key.serialize_pem().as_bytes(), true)?;
    Ok(files)
}

/// Writes `contents` to a new file at `path`; a secret one readable by its owner only.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), InitError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let written = options
        .open(path)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()));
    written.map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => InitError::Exists {
            path: path.to_owned(),
        },
        _ => InitError::Write {
            path: path.to_owned(),
            source,
        },
    })
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
