//! TLS to the database, as the connection string's `sslmode` and
//! `sslrootcert` ask.
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: TLS, and the server's
//!   certificate is verified (chain and host name) against `sslrootcert`
//!   (a PEM file of CA certificates) when given, else the system's roots.
//!   libpq's `require` checks no certificate; sluice checks it always (a
//!   database whose certificate it cannot verify is named in the error:
//!   give its CA as `sslrootcert`).
//! - `prefer` (libpq's default, and sluice's when no `sslmode` is given)
//!   or `allow`: TLS whenever the server offers it and the connection
//!   over it works; plain TCP when the server answers that it has no TLS
//!   and, as libpq's `prefer` does, when the TLS handshake fails (a server
//!   whose TLS rustls does not take: below 1.2, an old key type) or the
//!   server refuses the connection once it is TLS (a `hostnossl` line in
//!   `pg_hba.conf`): then the connection is made again, plain. As libpq's
//!   `prefer`, the
//!   certificate is not checked then (unless `sslrootcert` is given: a CA
//!   named is always checked against, and a certificate it does not
//!   verify is an error, not a reason to go plain; other failures are): the connection is kept
//!   from eavesdroppers, not from one who can stand between sluice and the
//!   database, who could also answer for the server that it has no TLS.
//!   Checking by default would refuse every server with a self-signed
//!   certificate (the default of Debian's and Ubuntu's packages) where
//!   libpq connects; SCRAM authentication with channel binding, which
//!   tokio-postgres uses when the server offers it, still fails against
//!   such a go-between. libpq's `allow` tries plain TCP first; here it is
//!   `prefer`. A connection to a host that is not this machine that ends
//!   up plain is warned about once (see the crate's `plaintext_warning`).
//! - `disable`: plain TCP.
//!
//! tokio-postgres knows neither `sslrootcert` nor the `verify-*` modes:
//! they are taken out of the string before it parses it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How connections are made.
#[derive(Clone)]
pub(crate) enum Tls {
    /// `sslmode=disable`.
    Plain,
    /// TLS when the server offers it (or always, as the connection
    /// string's `sslmode` says, which [`split`] leaves as tokio-postgres
    /// reads it), through this connector.
    Rustls(MakeRustlsConnect, Fallback),
}

/// Whether a connection whose TLS failed is made again in plain TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Never (`require`, `verify-*`: no downgrade).
    Never,
    /// Unless the server's certificate failed verification (`prefer` with
    /// `sslrootcert`: a CA named is always checked against).
    UnlessUnverified,
    /// On any failure of the TLS handshake, or a refusal by the server
    /// once TLS was on (`prefer` without `sslrootcert`).
    Always,
}

impl Fallback {
    /// Whether a connection that failed as `seen` says (and with `error`)
    /// is to be made again in plain TCP.
    pub(crate) fn plain_again(self, seen: &Seen, error: &tokio_postgres::Error) -> bool {
        let handshake_failed = seen.handshake_failed.load(Ordering::Relaxed);
        // An error the server sent (in the startup: its authentication
        // refused, a pg_hba.conf line for TLS or not) once TLS was on.
        let refused_over_tls = seen.used.load(Ordering::Relaxed) && error.as_db_error().is_some();
        match self {
            Fallback::Never => false,
            Fallback::Always => handshake_failed || refused_over_tls,
            Fallback::UnlessUnverified => {
                !seen.unverified.load(Ordering::Relaxed) && (handshake_failed || refused_over_tls)
            }
        }
    }
}

/// How much TLS a connection string asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `disable`: plain TCP.
    Disable,
    /// `prefer`, `allow` or none: TLS if the server offers it.
    #[default]
    Prefer,
    /// `require`, `verify-ca`, `verify-full`: TLS, the certificate checked.
    Require,
}

impl Mode {
    /// What tokio-postgres is told.
    pub(crate) fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require => SslMode::Require,
        }
    }
}

/// What [`split`] took out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The `sslmode`.
    pub mode: Mode,
    /// `sslrootcert`, when given.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (a URL's
/// query, or `key=value` pairs), and puts back `sslmode=require` where TLS
/// is asked for, so tokio-postgres negotiates it (the caller sets the
/// parsed configuration's mode from [`Wanted::mode`] in any case). Everything else is left
/// as it was, byte for byte; no value but those two is read or quoted.
pub(crate) fn split(conn: &str) -> Result<(String, Wanted), String> {
    let mut wanted = Wanted::default();
    let mut take = |key: &str, value: &str| -> Result<(), String> {
        if key == "sslmode" {
            wanted.mode = match value {
                "require" | "verify-ca" | "verify-full" => Mode::Require,
                "allow" | "prefer" => Mode::Prefer,
                "disable" => Mode::Disable,
                other => {
                    return Err(format!(
                        "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ));
                }
            };
        } else {
            wanted.root_cert = Some(value.to_string()).filter(|v| v != "system");
        }
        Ok(())
    };
    let ours = |key: &str| key == "sslmode" || key == "sslrootcert";
    let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    let rest = if url {
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if ours(key) {
                        let value = percent_decode(value)
                            .ok_or_else(|| format!("the value of {key} has a broken %-escape"))?;
                        take(key, &value)?;
                    } else {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut rest = String::new();
        let mut from = 0;
        for (key, value, span) in pairs(conn)? {
            if ours(&key) {
                take(&key, &value)?;
                rest.push_str(&conn[from..span.0]);
                from = span.1;
            }
        }
        rest.push_str(&conn[from..]);
        rest.trim().to_string()
    };
    let rest = match (wanted.mode == Mode::Require, url) {
        (false, _) => rest,
        (true, true) if rest.contains('?') => format!("{rest}&sslmode=require"),
        (true, true) => format!("{rest}?sslmode=require"),
        (true, false) => format!("{rest} sslmode=require"),
    };
    Ok((rest, wanted))
}

/// A keyword string's pair: key, value, byte span.
type Pair = (String, String, (usize, usize));

/// The `key=value` pairs of a libpq keyword string, as libpq reads them
/// (spaces around `=`, values in single quotes with `\` escapes): each
/// key, its value unescaped, and the byte span of the whole pair.
fn pairs(conn: &str) -> Result<Vec<Pair>, String> {
    let bytes = conn.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = conn[start..i].to_string();
        skip_spaces(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(format!(
                "`{key}` in the connection string has no `=` after it"
            ));
        }
        i += 1;
        skip_spaces(&mut i);
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value =
            String::from_utf8(value).map_err(|_| format!("the value of `{key}` is not UTF-8"))?;
        out.push((key, value, (start, i)));
    }
}

/// `%XX` escapes of a URL's query value; `None` for a broken one.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(value.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The connector for `wanted`: none for `disable`; a verifying one for
/// `require` and for a CA given; for `prefer` without a CA one that takes
/// any certificate (see the module's comment).
pub(crate) fn connector(wanted: &Wanted) -> Result<Tls, String> {
    if wanted.mode == Mode::Disable {
        return Ok(Tls::Plain);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    if wanted.mode == Mode::Prefer && wanted.root_cert.is_none() {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth();
        return Ok(Tls::Rustls(
            MakeRustlsConnect::new(config),
            Fallback::Always,
        ));
    }
    let fallback = match wanted.mode {
        Mode::Prefer => Fallback::UnlessUnverified,
        Mode::Require | Mode::Disable => Fallback::Never,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &wanted.root_cert {
        Some(path) => {
            let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("sslrootcert {path} is not a PEM file of certificates: {e}")
                })?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {path} holds no certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: a certificate is unusable: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unusable system certificate does not stop the rest.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "sslmode asks for TLS but the system has no CA certificates: give the database's CA as sslrootcert".into(),
                );
            }
        }
    }
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    Ok(Tls::Rustls(MakeRustlsConnect::new(config), fallback))
}

/// `prefer`'s certificate check: none (libpq's `prefer` makes none). The
/// handshake's signatures are still checked, so the session's keys are
/// the certificate holder's, whoever that is.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What [`Noted`] saw of the TLS handshakes of one connection (with
/// several hosts, of all those tried: the one connected to is the last).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The server took TLS (answered yes to the request for it).
    pub used: AtomicBool,
    /// A TLS handshake failed.
    pub handshake_failed: AtomicBool,
    /// A TLS handshake failed on the server's certificate.
    pub unverified: AtomicBool,
}

/// A connector that notes what became of its TLS (tokio-postgres asks it
/// for the handshake only when the server answered yes to its request for
/// TLS), so a connection that went plain, or whose handshake failed, can
/// be told.
pub(crate) struct Noted<T> {
    pub inner: T,
    pub seen: Arc<Seen>,
}

impl<S, M> MakeTlsConnect<S> for Noted<M>
where
    M: MakeTlsConnect<S>,
    <M::TlsConnect as TlsConnect<S>>::Future: Send + 'static,
    <M::TlsConnect as TlsConnect<S>>::Error: std::error::Error + 'static,
{
    type Stream = M::Stream;
    type TlsConnect = Noted<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(Noted {
            inner: self.inner.make_tls_connect(domain)?,
            seen: Arc::clone(&self.seen),
        })
    }
}

impl<S, T> TlsConnect<S> for Noted<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
    T::Error: std::error::Error + 'static,
{
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<T::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let seen = self.seen;
        seen.used.store(true, Ordering::Relaxed);
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let result = handshake.await;
            if let Err(e) = &result {
                seen.handshake_failed.store(true, Ordering::Relaxed);
                if on_certificate(e) {
                    seen.unverified.store(true, Ordering::Relaxed);
                }
            }
            result
        })
    }
}

/// Whether a failed handshake's error is rustls refusing the server's
/// certificate (tokio-rustls gives rustls' errors inside an `io::Error`).
fn on_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if let Some(rustls::Error::InvalidCertificate(_)) =
            inner.unwrap_or(e).downcast_ref::<rustls::Error>()
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn ssl_options_are_taken_out_and_require_put_back() {
        let (rest, wanted) = split(
            "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fc++%2Fca.pem&options=-cx&",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?options=-cx&sslmode=require");
        assert_eq!(
            wanted,
            Wanted {
                mode: Mode::Require,
                root_cert: Some("/etc/c++/ca.pem".into())
            }
        );
        let (rest, wanted) = split("postgres://u@h/db?sslmode=prefer").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted, Wanted::default());
        let (rest, wanted) = split("postgres://u@h/db").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted.mode, Mode::Prefer);
        let (rest, wanted) = split("postgres://u@h/db?sslmode=allow").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted.mode, Mode::Prefer);
        let (rest, wanted) = split("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted.mode, Mode::Disable);
        // Other values are never read: a broken escape in a password is
        // for tokio-postgres to judge, and is never quoted.
        let (rest, _) = split("postgres://h/db?user=u&password=se%zzcret").unwrap();
        assert_eq!(rest, "postgres://h/db?user=u&password=se%zzcret");
        let err = split("postgres://h/db?sslrootcert=%zz").unwrap_err();
        assert!(err.contains("sslrootcert has a broken %-escape"), "{err}");
        let err = split("postgres://h/db?sslmode=maybe").unwrap_err();
        assert!(err.contains("sslmode `maybe`"), "{err}");
    }

    #[test]
    fn keyword_strings_keep_every_other_pair_as_written() {
        let (rest, wanted) = split(
            "host=h password='a  b sslmode=disable' sslmode = require sslrootcert='/ca dir/x.pem' user=u",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=h password='a  b sslmode=disable'   user=u sslmode=require"
        );
        assert_eq!(
            wanted,
            Wanted {
                mode: Mode::Require,
                root_cert: Some("/ca dir/x.pem".into())
            }
        );
        let (rest, wanted) = split("host=h sslrootcert=system sslmode=verify-ca").unwrap();
        assert_eq!(rest, "host=h sslmode=require");
        assert_eq!(wanted.root_cert, None);
        assert!(
            split("host=h password='open")
                .unwrap_err()
                .contains("no closing quote")
        );
    }

    #[test]
    fn a_root_cert_file_that_is_not_one_is_refused_by_name() {
        for mode in [Mode::Require, Mode::Prefer] {
            let wanted = Wanted {
                mode,
                root_cert: Some("/no/such/ca.pem".into()),
            };
            let Err(err) = connector(&wanted) else {
                panic!("a missing sslrootcert was taken");
            };
            assert!(
                err.contains("cannot read sslrootcert /no/such/ca.pem"),
                "{err}"
            );
        }
    }
}
