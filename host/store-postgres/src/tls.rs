//! TLS to the database, as the connection string's `sslmode` and
//! `sslrootcert` ask.
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: TLS, and the server's
//!   certificate is verified (chain and host name) against `sslrootcert`
//!   (a PEM file of CA certificates) when given, else the system's roots.
//!   libpq's `require` checks no certificate; sluice checks it always (a
//!   database whose certificate it cannot verify is named in the error:
//!   give its CA as `sslrootcert`).
//! - `disable`, `allow`, `prefer` (libpq's default) or none: plain TCP.
//!
//! tokio-postgres knows neither `sslrootcert` nor the `verify-*` modes:
//! they are taken out of the string before it parses it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How connections are made.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Verified(MakeRustlsConnect),
}

/// What [`split`] took out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// TLS asked for (`require` or `verify-*`).
    pub tls: bool,
    /// `sslrootcert`, when given.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (a URL's
/// query, or `key=value` pairs), and puts back `sslmode=require` where TLS
/// is asked for, so tokio-postgres negotiates it.
pub(crate) fn split(conn: &str) -> Result<(String, Wanted), String> {
    let mut wanted = Wanted::default();
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                wanted.tls = match value {
                    "require" | "verify-ca" | "verify-full" => true,
                    "disable" | "allow" | "prefer" => false,
                    other => {
                        return Err(format!(
                            "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ));
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                wanted.root_cert = Some(value.to_string()).filter(|v| v != "system");
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_decode(value)?;
                    if !take(key, &value)? {
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
        // key=value pairs; a quoted value (with spaces) is kept as it is
        // unless it is one of the two keys.
        let mut kept = Vec::new();
        for pair in conn.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = value.trim_matches('\'');
            if !take(key.trim(), value)? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    let rest = if wanted.tls {
        let joiner = if rest.starts_with("postgres") {
            if rest.contains('?') { "&" } else { "?" }
        } else {
            " "
        };
        format!("{rest}{joiner}sslmode=require")
    } else {
        rest
    };
    Ok((rest, wanted))
}

/// `%XX` escapes of a URL's query value.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{value}` has a broken %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{value}` is not UTF-8"))
}

/// The connector for `wanted`.
pub(crate) fn connector(wanted: &Wanted) -> Result<Tls, String> {
    if !wanted.tls {
        return Ok(Tls::Plain);
    }
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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls::Verified(MakeRustlsConnect::new(config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    #[test]
    fn ssl_options_are_taken_out_and_require_put_back() {
        let (rest, wanted) = split(
            "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=-cx",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?options=-cx&sslmode=require");
        assert_eq!(
            wanted,
            Wanted {
                tls: true,
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        let (rest, wanted) = split("postgres://u@h/db?sslmode=prefer").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted, Wanted::default());
        let (rest, wanted) = split("postgres://u@h/db").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert!(!wanted.tls);
        let (rest, wanted) =
            split("host=h dbname=db sslmode=require sslrootcert=system user=u").unwrap();
        assert_eq!(rest, "host=h dbname=db user=u sslmode=require");
        assert_eq!(
            wanted,
            Wanted {
                tls: true,
                root_cert: None
            }
        );
        let err = split("postgres://h/db?sslmode=maybe").unwrap_err();
        assert!(err.contains("sslmode `maybe`"), "{err}");
        let err = split("postgres://h/db?sslrootcert=%zz").unwrap_err();
        assert!(err.contains("broken %-escape"), "{err}");
    }

    #[test]
    fn a_root_cert_file_that_is_not_one_is_refused_by_name() {
        let wanted = Wanted {
            tls: true,
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
