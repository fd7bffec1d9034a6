//! TLS at the edge: certificates chosen by SNI, TLS 1.2 and 1.3 only.
//!
//! The control plane hands over every certificate at once (`set`): a new set
//! applies to the next handshake, while connections already open keep the
//! certificate they were made with. One `ServerConfig` serves every thread,
//! so session tickets and the session cache are shared by them all.
//!
//! The crypto is ring's rather than aws-lc-rs's (which rustls now prefers for
//! its post-quantum key exchange): ring builds with cc alone.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::{default_provider, Ticketer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// A chain and key as PEM, checked and ready for handshakes.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate chain is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the chain".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the private key is not PEM: {e}"))?;
    let provider = default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

#[derive(Default)]
struct Set {
    default: Option<Arc<CertifiedKey>>,
    /// Lower-case host names; "*.example.com" for a wildcard.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} named certificates", self.by_name.len())
    }
}

/// The certificates of every name the routers answer to, by SNI.
#[derive(Default, Debug)]
pub struct Certificates {
    set: RwLock<Arc<Set>>,
}

impl Certificates {
    pub fn set(
        &self,
        default: Option<Arc<CertifiedKey>>,
        by_name: HashMap<String, Arc<CertifiedKey>>,
    ) {
        let fresh = Arc::new(Set { default, by_name });
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    fn current(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The certificate for `name`: its own, else a wildcard one label up,
    /// else the default.
    pub fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(found) = set.by_name.get(&name) {
                return Some(found.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(found) = set.by_name.get(&format!("*.{parent}")) {
                    return Some(found.clone());
                }
            }
        }
        set.default.clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// The one server configuration: TLS 1.2 and 1.3 with ring's suites (AEAD
/// only: AES-GCM and ChaCha20-Poly1305, ECDHE key exchange), tickets.
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.ticketer = Ticketer::new().map_err(|e| e.to_string())?;
    // HTTP/2 first for the clients that offer it (crate::http2), HTTP/1.1 otherwise.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
