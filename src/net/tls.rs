//! TLS on both ports (README, Security), with rustls: TLS 1.3 and 1.2 only, the
//! certificate and key of this node, and the CA that signs every node's
//! certificate. The peer port asks for a client certificate chained to the
//! CA (mutual TLS) and a node dialing a peer checks the peer's certificate
//! against the CA and the host of the address it dials; the client port
//! asks for none (`redis-cli --tls --cacert ca.pem` works).
//!
//! Certificates are read once, at start; a bad one stops the node (exit 2).

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::stream::Stream;

/// The TLS side of a node, built from `--tls-cert`, `--tls-key`, `--tls-ca`.
#[derive(Clone)]
pub struct TlsSettings {
    clients: Arc<ServerConfig>,
    peers: Arc<ServerConfig>,
    dial: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings")
    }
}

fn certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> =
        iter.collect::<Result<_, _>>().map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("--tls-key {}: no usable PEM private key ({e})", path.display()))
}

/// The CA's certificates, as the roots every peer and client chains to.
pub fn roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca, "--tls-ca")? {
        roots.add(cert).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

impl TlsSettings {
    pub fn load(cert: &Path, key_path: &Path, ca: &Path) -> Result<TlsSettings, String> {
        let chain = certs(cert, "--tls-cert")?;
        let key = key(key_path)?;
        let roots = roots(ca)?;
        let mismatch =
            |e: rustls::Error| format!("--tls-cert {} and --tls-key {}: {e}", cert.display(), key_path.display());
        let clients = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        let verifier = WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        let peers = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        let dial = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(mismatch)?;
        Ok(TlsSettings { clients: Arc::new(clients), peers: Arc::new(peers), dial: Arc::new(dial) })
    }

    /// A client connection, TLS from its first byte.
    pub fn accept_client(&self, tcp: TcpStream) -> io::Result<Stream> {
        accept(&self.clients, tcp)
    }

    /// A peer connection: the peer must present a certificate of the CA.
    pub fn accept_peer(&self, tcp: TcpStream) -> io::Result<Stream> {
        accept(&self.peers, tcp)
    }

    /// Dials `host` (the host of the address dialed, which the peer's
    /// certificate must name) as a peer, presenting this node's certificate.
    pub fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Stream> {
        connect(&self.dial, host, tcp)
    }
}

fn accept(config: &Arc<ServerConfig>, tcp: TcpStream) -> io::Result<Stream> {
    let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    Ok(Stream::TlsServer(Box::new(StreamOwned::new(conn, tcp))))
}

/// A TLS client connection with `config` to `host`.
pub fn connect(config: &Arc<ClientConfig>, host: &str, tcp: TcpStream) -> io::Result<Stream> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a TLS server name: {e}")))?;
    let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    Ok(Stream::TlsClient(Box::new(StreamOwned::new(conn, tcp))))
}

/// A client's TLS settings (`bin/kv`, `bin/bench`, tests): trust `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    Ok(Arc::new(ClientConfig::builder().with_root_certificates(roots(ca)?).with_no_client_auth()))
}

/// The host part of `host:port` (an IPv6 literal in brackets loses them).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}
