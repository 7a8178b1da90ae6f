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
/// is asked for, so tokio-postgres negotiates it. Everything else is left
/// as it was, byte for byte; no value but those two is read or quoted.
pub(crate) fn split(conn: &str) -> Result<(String, Wanted), String> {
    let mut wanted = Wanted::default();
    let mut take = |key: &str, value: &str| -> Result<(), String> {
        if key == "sslmode" {
            wanted.tls = match value {
                "require" | "verify-ca" | "verify-full" => true,
                "disable" | "allow" | "prefer" => false,
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
    let rest = match (wanted.tls, url) {
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
            "postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fc++%2Fca.pem&options=-cx&",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5432/db?options=-cx&sslmode=require");
        assert_eq!(
            wanted,
            Wanted {
                tls: true,
                root_cert: Some("/etc/c++/ca.pem".into())
            }
        );
        let (rest, wanted) = split("postgres://u@h/db?sslmode=prefer").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(wanted, Wanted::default());
        let (rest, wanted) = split("postgres://u@h/db").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert!(!wanted.tls);
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
                tls: true,
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
