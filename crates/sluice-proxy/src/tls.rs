//! TLS on both sides: termination with several certificates chosen by SNI, and
//! re-encryption towards servers verified by chain, by pinned fingerprint, or not at all.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sluice_config::{CertificateFiles, ServiceTls, UpstreamTls, Verify};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TlsFileError {
    pub file: String,
    pub message: String,
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsFileError {
    TlsFileError {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The server side of a TLS-terminating service.
pub fn server_config(tls: &ServiceTls) -> Result<Arc<ServerConfig>, TlsFileError> {
    let provider = provider();
    let certs = tls
        .certificates
        .iter()
        .map(|files| load_certified_key(files, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| file_error(Path::new("tls"), e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = if tls.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

fn load_certified_key(
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(&files.cert, format!("cannot read the certificate: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no certificate found in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("cannot read the private key: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        file_error(
            &files.key,
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(key))
}

/// Serves the first certificate valid for the name the client asked for, or the first
/// certificate when it asked for none or for an unknown name.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        let fits = |key: &&Arc<CertifiedKey>| {
            let Some(name) = &wanted else { return false };
            key.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
        };
        self.certs.iter().find(fits).or(self.certs.first()).cloned()
    }
}

/// The client side towards a pool's servers.
pub fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsFileError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| file_error(Path::new("tls"), e))?;
    let mut config = match &tls.verify {
        Verify::Full { ca_file } => builder
            .with_root_certificates(roots(ca_file.as_deref())?)
            .with_no_client_auth(),
        Verify::Fingerprint(pins) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pins: Some(pins.clone()),
                provider,
            }))
            .with_no_client_auth(),
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pins: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    // Exchange does not run NTLM over HTTP/2: the server side stays on HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that completes handshakes without checking who answers: a health check of
/// servers whose TLS sluice passes through (their clients check the certificate), with
/// no ALPN offered since the protocol inside may be anything.
pub fn handshake_only_config() -> Arc<ClientConfig> {
    let tls = UpstreamTls {
        verify: Verify::None,
        sni: None,
    };
    let mut config = (*client_config(&tls).expect("no file is read without verification")).clone();
    config.alpn_protocols.clear();
    Arc::new(config)
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                let cert = cert.map_err(|e| file_error(path, e))?;
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// SHA-256 of a DER certificate, as in `verify = "fingerprint"`.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Accepts a server whose end certificate has a pinned digest (`pins: None` accepts any
/// certificate). Handshake signatures are always checked, so the server must hold the key.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Option<Vec<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pins) = &self.pins else {
            return Ok(ServerCertVerified::assertion());
        };
        if pins.contains(&fingerprint(end_entity)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint sha256:{} is not pinned",
                hex(&fingerprint(end_entity))
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_lab::TestCert;

    fn load(dir: &Path, cert: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsFileError> {
        let files = CertificateFiles {
            cert: dir.join(cert),
            key: dir.join(key),
        };
        load_certified_key(&files, &provider())
    }

    #[test]
    fn certificates_and_keys_are_checked_at_load_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        TestCert::new(&["a.example"]).write(d, "a");
        TestCert::new(&["b.example"]).write(d, "b");
        std::fs::write(d.join("empty.pem"), "").unwrap();
        std::fs::write(
            d.join("junk.key"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(load(d, "a.pem", "a.key").is_ok());
        let err = load(d, "a.pem", "b.key").unwrap_err();
        assert!(err.file.ends_with("b.key"), "{err}");
        assert!(err.message.contains("does not fit"), "{err}");
        let err = load(d, "empty.pem", "a.key").unwrap_err();
        assert!(
            err.file.ends_with("empty.pem") && err.message.contains("no certificate"),
            "{err}"
        );
        let err = load(d, "a.pem", "junk.key").unwrap_err();
        assert!(err.file.ends_with("junk.key"), "{err}");
        let err = load(d, "missing.pem", "a.key").unwrap_err();
        assert!(err.file.ends_with("missing.pem"), "{err}");
    }
}
