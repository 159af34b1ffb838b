//! `broker tls-init DIR`: a development CA and a certificate it signed for this machine, for
//! trying TLS without a CA of one's own.

use std::io;
use std::path::{Path, PathBuf};

use super::TlsFiles;

/// The names the development certificate of [`write_development_files`] is valid for: this
/// machine, by its loopback addresses and by name.
pub const DEVELOPMENT_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

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
