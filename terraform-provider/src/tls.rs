//! TLS between Terraform and the provider, as go-plugin's automatic mutual
//! TLS has it: Terraform hands the provider its client certificate (PEM, in
//! `PLUGIN_CLIENT_CERT`), the provider makes a self-signed server
//! certificate for `localhost` and prints it in the handshake line, and
//! each side accepts only the other's certificate.
//!
//! Terraform's certificate is a self-signed CA certificate on ECDSA P-521,
//! so the usual path verification does not apply (a CA certificate is not
//! accepted as a client's) and ring cannot check its signatures: the
//! verifier here pins the exact certificate and checks the handshake
//! signature with the `p521` crate, other schemes with ring.

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, PrivateKeyDer, PrivatePkcs8KeyDer,
    SignatureVerificationAlgorithm, UnixTime, alg_id,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("PLUGIN_CLIENT_CERT holds no PEM certificate")]
    NoClientCertificate,
    #[error("cannot make the server certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server side of the plugin connection: its TLS configuration and the
/// certificate to print in the handshake line.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The server certificate as go-plugin prints it: base64 of the DER,
    /// without padding.
    pub handshake_cert: String,
}

impl ServerTls {
    /// For the client whose certificate is `client_pem`.
    pub fn new(client_pem: &str) -> Result<Self, TlsError> {
        let client = pem_certificate(client_pem).ok_or(TlsError::NoClientCertificate)?;
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.self_signed(&key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PinnedClient {
            certificate: client,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        // gRPC clients insist on HTTP/2 by ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            handshake_cert: base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert.der()),
        })
    }
}

/// The DER of the first certificate in a PEM text.
fn pem_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem[start..].find(END)?;
    let body: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some(CertificateDer::from(der))
}

/// Accepts exactly one client certificate, and checks that the client holds
/// its key.
#[derive(Debug)]
struct PinnedClient {
    certificate: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClient {
    fn algorithms_for(&self, scheme: SignatureScheme) -> &WebPkiSupportedAlgorithms {
        if scheme == SignatureScheme::ECDSA_NISTP521_SHA512 {
            &P521
        } else {
            &self.algorithms
        }
    }
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, self.algorithms_for(dss.scheme))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, self.algorithms_for(dss.scheme))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.algorithms.supported_schemes();
        schemes.push(SignatureScheme::ECDSA_NISTP521_SHA512);
        schemes
    }
}

/// ECDSA on P-521 with SHA-512, the signature of Terraform's client key.
#[derive(Debug)]
struct EcdsaP521Sha512;

impl SignatureVerificationAlgorithm for EcdsaP521Sha512 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        use p521::ecdsa::signature::Verifier;
        let key =
            p521::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let signature =
            p521::ecdsa::Signature::from_der(signature).map_err(|_| InvalidSignature)?;
        key.verify(message, &signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P521
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA512
    }
}

static P521_SHA512: &dyn SignatureVerificationAlgorithm = &EcdsaP521Sha512;

static P521: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[P521_SHA512],
    mapping: &[(SignatureScheme::ECDSA_NISTP521_SHA512, &[P521_SHA512])],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Random enough for a test key: counter bytes through ring's SHA-256.
    struct TestRng(u64);

    impl p521::elliptic_curve::rand_core::RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(32) {
                self.0 += 1;
                let d = ring::digest::digest(&ring::digest::SHA256, &self.0.to_le_bytes());
                chunk.copy_from_slice(&d.as_ref()[..chunk.len()]);
            }
        }
        fn try_fill_bytes(
            &mut self,
            dest: &mut [u8],
        ) -> Result<(), p521::elliptic_curve::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl p521::elliptic_curve::rand_core::CryptoRng for TestRng {}

    #[test]
    fn a_p521_handshake_signature_is_checked() {
        use p521::ecdsa::signature::RandomizedSigner;
        let mut rng = TestRng(7);
        let key = p521::ecdsa::SigningKey::random(&mut rng);
        let public = p521::ecdsa::VerifyingKey::from(&key)
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let message = b"TLS 1.3, client CertificateVerify";
        let signature: p521::ecdsa::Signature = key.sign_with_rng(&mut rng, message);
        let der = signature.to_der();
        let alg = EcdsaP521Sha512;
        assert!(
            alg.verify_signature(&public, message, der.as_bytes())
                .is_ok()
        );
        assert!(
            alg.verify_signature(&public, b"another message", der.as_bytes())
                .is_err()
        );
        let mut forged = der.as_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(alg.verify_signature(&public, message, &forged).is_err());
    }

    #[test]
    fn only_the_pinned_client_certificate_is_accepted() {
        let pinned = CertificateDer::from(vec![1, 2, 3]);
        let verifier = PinnedClient {
            certificate: pinned.clone(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let now = UnixTime::now();
        assert!(verifier.verify_client_cert(&pinned, &[], now).is_ok());
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(vec![1, 2, 4]), &[], now)
                .is_err()
        );
        assert!(
            verifier
                .supported_verify_schemes()
                .contains(&SignatureScheme::ECDSA_NISTP521_SHA512)
        );
    }

    #[test]
    fn the_client_certificate_is_read_from_pem_and_the_server_one_printed_unpadded() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        assert_eq!(pem_certificate(&pem).unwrap().as_ref(), cert.der().as_ref());
        let tls = ServerTls::new(&pem).unwrap();
        assert!(!tls.handshake_cert.contains('='));
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(matches!(
            ServerTls::new("no certificate here"),
            Err(TlsError::NoClientCertificate)
        ));
    }
}
