//! A private CA and leaf certificates for TLS tests, as PEM files in a
//! temporary directory. Starts nothing.

use std::path::{Path, PathBuf};

// === certificates ===

/// A private CA and a `localhost` certificate it signed, as PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A renewed leaf certificate and key (same CA), in files of their own.
pub struct Renewed {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, dir: &Path) -> (PathBuf, PathBuf) {
    leaf_for(issuer, dir, &["localhost"])
}

fn leaf_for(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: &Path,
    names: &[&str],
) -> (PathBuf, PathBuf) {
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    // rcgen reads a name that parses as an IP address as an IP SAN.
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, issuer)
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (cert, key)
}

impl TestCerts {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let (cert, key) = leaf(&issuer, dir.path());
        Self {
            dir,
            ca,
            cert,
            key,
            issuer,
        }
    }

    /// A key and certificate for `names` (host names or IP addresses)
    /// from the same CA.
    pub fn issue(&self, names: &[&str]) -> Renewed {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf_for(&self.issuer, dir.path(), names);
        Renewed {
            _dir: dir,
            cert,
            key,
        }
    }

    /// A new key and certificate for `localhost` from the same CA.
    pub fn renew(&self) -> Renewed {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf(&self.issuer, dir.path());
        Renewed {
            _dir: dir,
            cert,
            key,
        }
    }

    /// A client configuration trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}
