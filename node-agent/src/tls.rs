//! TLS for the agent's HTTP API (`[api] tls_cert_file`, `tls_key_file`, `tls_ca_file`).
//!
//! - Server side: a rustls configuration whose certificate is read again when its files
//!   change ([`ServerCert::reload_if_changed`], every [`RELOAD_EVERY`] and at SIGHUP), so a
//!   renewed certificate needs no restart; a broken renewal keeps the old certificate.
//! - Client side ([`ClientTls`]): the CLI and the agents asking their peers use HTTPS and
//!   trust only the configured CA (the public web roots when none is configured).
//! - `baton keygen --tls DIR` ([`issue`]): a cluster CA and one certificate per server for
//!   the server's name and API address.
//!
//! Every file is read bounded (1 MiB), private keys only when group and others cannot
//! read them, as the cluster key.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use baton_core::config::Config;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Largest certificate, key or CA file read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;
/// How often the agent looks for a renewed certificate.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// A file changed more recently than this may still be being written: the next check
/// reads it.
const SETTLE: Duration = Duration::from_secs(1);
/// Lifetime of the CA and of the server certificates `baton keygen --tls` issues.
const CA_DAYS: i64 = 20 * 365;
const SERVER_DAYS: i64 = 5 * 365;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {err}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{what} {} is not a regular file of at most 1 MiB", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("TLS private key {} has mode {:04o}: group or others may read or change it; run: chmod 600 {}", path.display(), mode & 0o7777, path.display())]
    Permissive { path: PathBuf, mode: u32 },
    #[error("{what} {}: {msg}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        msg: String,
    },
    #[error("the TLS private key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: std::io::Error },
    #[error("cannot issue {what}: {msg}")]
    Issue { what: String, msg: String },
}

impl TlsError {
    /// Stable code (the CLI's JSON `error.code`, the agent's exit reason).
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::Unreadable { .. } => "tls-file-unreadable",
            TlsError::NotAFile { .. } => "tls-file-invalid",
            TlsError::Permissive { .. } => "tls-key-permissive-mode",
            TlsError::Invalid { .. } => "tls-file-invalid",
            TlsError::KeyMismatch { .. } => "tls-key-mismatch",
            TlsError::Write { .. } => "tls-write-failed",
            TlsError::Issue { .. } => "tls-issue-failed",
        }
    }
}

/// The crypto of every TLS connection the agent makes or takes.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a PEM file: a regular file of at most [`MAX_PEM_BYTES`]; a `secret` one only if
/// group and others have no access.
fn read_pem(what: &'static str, path: &Path, secret: bool) -> Result<Vec<u8>, TlsError> {
    use crate::files::ReadError;
    let path_buf = path.to_path_buf();
    crate::files::read_bounded(path, MAX_PEM_BYTES, secret).map_err(|e| match e {
        ReadError::Io(err) => TlsError::Unreadable {
            what,
            path: path_buf,
            err,
        },
        ReadError::NotAFile | ReadError::TooLarge => TlsError::NotAFile {
            what,
            path: path_buf,
        },
        ReadError::Permissive(mode) => TlsError::Permissive {
            path: path_buf,
            mode,
        },
    })
}

/// The certificates of a PEM file (at least one).
fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let raw = read_pem(what, path, false)?;
    let invalid = |msg: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        msg,
    };
    let certs = CertificateDer::pem_slice_iter(&raw)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid("holds no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(certs)
}

/// A server's certificate chain and private key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs("TLS certificate", cert)?;
    let raw = read_pem("TLS private key", key, true)?;
    let invalid = |msg: String| TlsError::Invalid {
        what: "TLS private key",
        path: key.to_path_buf(),
        msg,
    };
    let der = PrivateKeyDer::from_pem_slice(&raw)
        .map_err(|e| invalid(format!("no usable PEM private key ({e})")))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        // The certificate is parsed only when the key is compared with it.
        rustls::Error::InvalidCertificate(e) => TlsError::Invalid {
            what: "TLS certificate",
            path: cert.to_path_buf(),
            msg: format!("not a valid X.509 certificate ({e:?})"),
        },
        other => invalid(other.to_string()),
    })
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// The API's certificate: the one served, and the files it came from.
#[derive(Debug)]
pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    served: Arc<CertifiedKey>,
    /// The files' stamps when `served` was read, and when a read last failed (reported
    /// once until the files change again).
    stamps: (Option<Stamp>, Option<Stamp>),
    failed: Option<(Option<Stamp>, Option<Stamp>)>,
}

/// The outcome of [`ServerCert::reload_if_changed`].
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but cannot be used: the previous certificate is still served.
    Failed(TlsError),
}

impl ServerCert {
    /// Read the certificate and key (an error names the file and what is wrong).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerCert>, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let served = Arc::new(load_certified_key(cert, key)?);
        Ok(Arc::new(ServerCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: RwLock::new(Loaded {
                served,
                stamps,
                failed: None,
            }),
        }))
    }

    /// The files this certificate is read from.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Read the files again if they changed since they were last read (and have not
    /// changed in the last second: a renewal may still be writing them).
    pub fn reload_if_changed(&self, now: SystemTime) -> Reload {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if st.stamps == stamps || st.failed == Some(stamps) {
                return Reload::Unchanged;
            }
        }
        let settling = [stamps.0, stamps.1].iter().flatten().any(|s| {
            s.modified
                .is_some_and(|m| now.duration_since(m).unwrap_or_default() < SETTLE)
        });
        if settling {
            return Reload::Unchanged;
        }
        let loaded = load_certified_key(&self.cert, &self.key);
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok(k) => {
                st.served = Arc::new(k);
                st.stamps = stamps;
                st.failed = None;
                Reload::Reloaded
            }
            Err(e) => {
                st.failed = Some(stamps);
                Reload::Failed(e)
            }
        }
    }

    /// The TLS acceptor of the API (HTTP/1.1, TLS 1.2 and 1.3, no client certificates:
    /// clients authenticate with their bearer token).
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                what: "TLS certificate",
                path: self.cert.clone(),
                msg: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .served
                .clone(),
        )
    }
}

/// How clients reach the agents' APIs: plain HTTP, or HTTPS trusting the configured CA.
#[derive(Clone, Default)]
pub struct ClientTls {
    https: bool,
    /// The CA's certificates; `None`: the public web roots.
    ca: Option<Vec<reqwest::Certificate>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("https", &self.https)
            .field("ca_certificates", &self.ca.as_ref().map(Vec::len))
            .finish()
    }
}

impl ClientTls {
    /// Plain HTTP (no `[api] tls_cert_file`).
    pub fn plain() -> ClientTls {
        ClientTls::default()
    }

    /// What the configuration says; the CA file (relative to `config_file`) is read now.
    pub fn for_config(cfg: &Config, config_file: &Path) -> Result<ClientTls, TlsError> {
        if !cfg.api.tls() {
            return Ok(ClientTls::plain());
        }
        let ca = match &cfg.api.tls_ca_file {
            None => None,
            Some(p) => Some(load_ca(&crate::catalog::config_path(config_file, p))?),
        };
        Ok(ClientTls { https: true, ca })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// `b` trusting the CA only (when one is configured).
    pub fn apply(&self, b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let Some(ca) = &self.ca else { return b };
        let mut b = b.tls_built_in_root_certs(false);
        for c in ca {
            b = b.add_root_certificate(c.clone());
        }
        b
    }
}

fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let what = "TLS CA file";
    let certs = load_certs(what, path)?;
    certs
        .iter()
        .map(|c| {
            reqwest::Certificate::from_der(c).map_err(|e| TlsError::Invalid {
                what,
                path: path.to_path_buf(),
                msg: e.to_string(),
            })
        })
        .collect()
}

/// What [`issue`] wrote.
#[derive(Debug)]
pub struct Issued {
    /// The CA was already in the directory and was used again.
    pub reused_ca: bool,
    /// (server, certificate file, key file).
    pub servers: Vec<(String, PathBuf, PathBuf)>,
    pub ca_cert: PathBuf,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

fn ca_params(cluster: &str, now: time::OffsetDateTime) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Baton");
    p.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Baton cluster CA {cluster}"),
    );
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(CA_DAYS);
    p
}

/// Write `text` to `path` through a temporary file renamed into place (an agent reading
/// it meanwhile sees the old or the new file, never half of one).
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let werr = |err| TlsError::Write {
        path: path.to_path_buf(),
        err,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

fn issue_err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Issue {
        what: what.to_string(),
        msg: e.to_string(),
    }
}

/// Write a cluster CA (`DIR/ca.crt`, `DIR/ca.key`; kept when already there) and, for
/// every server of `cfg`, `DIR/SERVER.crt` and `DIR/SERVER.key` for its name and API
/// address, signed by the CA (replacing earlier ones: this is also how certificates are
/// renewed). Keys are written with mode 0600, the directory created with 0700.
pub fn issue(dir: &Path, cfg: &Config) -> Result<Issued, TlsError> {
    let mkdir = |err| TlsError::Write {
        path: dir.to_path_buf(),
        err,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(mkdir)?;
    let now = time::OffsetDateTime::now_utc();
    let (ca_cert_path, ca_key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let reused_ca = ca_key_path.exists();
    let params = ca_params(&cfg.cluster_name, now);
    let ca_key = if reused_ca {
        let raw = read_pem("CA key", &ca_key_path, true)?;
        let text = String::from_utf8_lossy(&raw);
        rcgen::KeyPair::from_pem(&text).map_err(|e| TlsError::Invalid {
            what: "CA key",
            path: ca_key_path.clone(),
            msg: e.to_string(),
        })?
    } else {
        let key = rcgen::KeyPair::generate().map_err(issue_err("the CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(issue_err("the CA certificate"))?;
        write_atomic(&ca_key_path, &key.serialize_pem(), 0o600)?;
        write_atomic(&ca_cert_path, &cert.pem(), 0o644)?;
        key
    };
    let issuer = rcgen::Issuer::new(params, ca_key);
    let mut servers = Vec::new();
    for s in &cfg.servers {
        let what = format!("the certificate of server `{}`", s.name);
        let key = rcgen::KeyPair::generate().map_err(issue_err(&what))?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Baton");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, s.name.clone());
        p.subject_alt_names = vec![rcgen::SanType::IpAddress(s.api.ip())];
        if let Ok(name) = rcgen::string::Ia5String::try_from(s.name.as_str()) {
            p.subject_alt_names.push(rcgen::SanType::DnsName(name));
        }
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f; // a positive integer
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(SERVER_DAYS);
        let cert = p.signed_by(&key, &issuer).map_err(issue_err(&what))?;
        let cert_path = dir.join(format!("{}.crt", s.name));
        let key_path = dir.join(format!("{}.key", s.name));
        write_atomic(&key_path, &key.serialize_pem(), 0o600)?;
        write_atomic(&cert_path, &cert.pem(), 0o644)?;
        servers.push((s.name.clone(), cert_path, key_path));
    }
    // A reused CA must be the one that signed: check every new certificate against it.
    let roots = load_certs("CA certificate", &ca_cert_path)?;
    for (name, cert_path, _) in &servers {
        let api = cfg
            .server(name)
            .map(|s| s.api.ip())
            .ok_or_else(|| TlsError::Issue {
                what: format!("the certificate of server `{name}`"),
                msg: "server vanished from the configuration".into(),
            })?;
        verify_server_cert(&roots, cert_path, api).map_err(|msg| TlsError::Issue {
            what: format!("the certificate of server `{name}`"),
            msg: format!(
                "it does not verify against {} ({msg}); was that CA made by `baton keygen --tls` for cluster `{}`? Move {} and {} away to start a new CA",
                ca_cert_path.display(),
                cfg.cluster_name,
                ca_cert_path.display(),
                ca_key_path.display()
            ),
        })?;
    }
    Ok(Issued {
        reused_ca,
        servers,
        ca_cert: ca_cert_path,
    })
}

/// Verify the certificate in `cert_path` for the address `ip` against `roots`, as a
/// client does.
pub fn verify_server_cert(
    roots: &[CertificateDer<'static>],
    cert_path: &Path,
    ip: std::net::IpAddr,
) -> Result<(), String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let chain = load_certs("TLS certificate", cert_path).map_err(|e| e.to_string())?;
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            leaf,
            rest,
            &rustls::pki_types::ServerName::IpAddress(ip.into()),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CONFIG: &str = r#"
[cluster]
name = "tls"
key_file = "k"

[[server]]
name = "a"
interconnects = ["10.0.0.1"]
api = "10.0.0.1:7420"

[[server]]
name = "b"
interconnects = ["10.0.0.2"]
api = "10.0.0.2:7420"
"#;

    fn cfg() -> Config {
        baton_core::config::load_str("baton.toml", CONFIG, &baton_core::config::AnyKind)
            .unwrap()
            .config
    }

    #[test]
    fn issued_certificates_verify_for_their_server_only() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        let out = issue(&dir, &cfg()).unwrap();
        assert!(!out.reused_ca);
        assert_eq!(out.servers.len(), 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.join("a.key")), 0o600);
        let roots = load_certs("ca", &out.ca_cert).unwrap();
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        verify_server_cert(&roots, &dir.join("a.crt"), a).unwrap();
        verify_server_cert(&roots, &dir.join("b.crt"), b).unwrap();
        // a's certificate does not pass for b's address.
        let e = verify_server_cert(&roots, &dir.join("a.crt"), b).unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // Keys belong to their certificates, not to the other server's.
        load_certified_key(&dir.join("a.crt"), &dir.join("a.key")).unwrap();
        let e = load_certified_key(&dir.join("a.crt"), &dir.join("b.key")).unwrap_err();
        assert_eq!(e.code(), "tls-key-mismatch", "{e}");

        // Again: the CA is kept, the server certificates renewed and still verify.
        let ca_before = std::fs::read(&out.ca_cert).unwrap();
        let a_before = std::fs::read(dir.join("a.crt")).unwrap();
        let again = issue(&dir, &cfg()).unwrap();
        assert!(again.reused_ca);
        assert_eq!(std::fs::read(&out.ca_cert).unwrap(), ca_before);
        assert_ne!(std::fs::read(dir.join("a.crt")).unwrap(), a_before);
        verify_server_cert(&roots, &dir.join("a.crt"), a).unwrap();

        // Another cluster's CA does not verify them.
        let other = d.path().join("other");
        issue(&other, &cfg()).unwrap();
        let other_roots = load_certs("ca", &other.join("ca.crt")).unwrap();
        assert!(verify_server_cert(&other_roots, &dir.join("a.crt"), a).is_err());
    }

    #[test]
    fn a_foreign_ca_in_the_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        issue(&dir, &cfg()).unwrap();
        // The CA certificate of another CA beside this CA's key: nothing verifies.
        let other = d.path().join("other");
        issue(&other, &cfg()).unwrap();
        std::fs::copy(other.join("ca.crt"), dir.join("ca.crt")).unwrap();
        let e = issue(&dir, &cfg()).unwrap_err();
        assert_eq!(e.code(), "tls-issue-failed");
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_with_the_file_named() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        issue(&dir, &cfg()).unwrap();
        let (crt, key) = (dir.join("a.crt"), dir.join("a.key"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_certified_key(&crt, &key).unwrap_err();
        assert_eq!(e.code(), "tls-key-permissive-mode");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

        let junk = d.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = load_certified_key(&junk, &key).unwrap_err();
        assert_eq!(e.code(), "tls-file-invalid");
        assert!(e.to_string().contains("junk.crt"), "{e}");
        let e = load_certified_key(&d.path().join("missing.crt"), &key).unwrap_err();
        assert_eq!(e.code(), "tls-file-unreadable");
        let e = load_certified_key(Path::new("/dev/zero"), &key).unwrap_err();
        assert_eq!(e.code(), "tls-file-invalid");
        // A certificate where the key should be.
        let e = load_certified_key(&crt, &{
            let p = d.path().join("crt-as-key");
            std::fs::copy(&crt, &p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        })
        .unwrap_err();
        assert_eq!(e.code(), "tls-file-invalid", "{e}");
        // A CA file without certificates.
        let e = load_ca(&junk).unwrap_err();
        assert!(e.to_string().contains("TLS CA file"), "{e}");
    }

    #[test]
    fn reload_takes_a_renewal_and_keeps_the_old_certificate_on_a_broken_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        issue(&dir, &cfg()).unwrap();
        let (crt, key) = (dir.join("a.crt"), dir.join("a.key"));
        let sc = ServerCert::load(&crt, &key).unwrap();
        let served = |sc: &ServerCert| sc.state.read().unwrap().served.cert[0].as_ref().to_vec();
        let first = served(&sc);
        let later = || crate::clock::wall() + Duration::from_secs(5);
        assert!(matches!(sc.reload_if_changed(later()), Reload::Unchanged));

        issue(&dir, &cfg()).unwrap();
        // Just written: left for the next check.
        assert!(matches!(
            sc.reload_if_changed(crate::clock::wall()),
            Reload::Unchanged
        ));
        assert!(matches!(sc.reload_if_changed(later()), Reload::Reloaded));
        let second = served(&sc);
        assert_ne!(first, second);

        // A broken renewal: reported once, the served certificate stays.
        std::fs::write(
            &crt,
            "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        match sc.reload_if_changed(later()) {
            Reload::Failed(e) => {
                assert!(e.to_string().contains("TLS certificate"), "{e}");
                assert!(e.to_string().contains("a.crt"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(sc.reload_if_changed(later()), Reload::Unchanged));
        assert_eq!(served(&sc), second);
    }
}
