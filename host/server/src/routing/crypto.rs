//! What some providers sign with beyond HMAC-SHA256: SHA-1 and its HMAC
//! (Sellsy, JobDiva, Autotask) and RSASSA-PKCS1-v1_5 with SHA-256
//! (HighLevel), from RustCrypto; and Node's forgiving base64 and PEM
//! reading, which decide what the original accepts. Verification only:
//! every input is public (the body, the signature, a public key); no input
//! panics.

use hmac::{Hmac, Mac};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// SHA-1.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

/// HMAC-SHA1 (`None` only if the key were refused, which HMAC never does:
/// a caller then refuses the webhook, never compares an empty MAC).
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> Option<[u8; 20]> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().into())
}

/// Whether `sig` is an RSASSA-PKCS1-v1_5 SHA-256 signature of `message`
/// by the RSA key `spki` (a SubjectPublicKeyInfo, DER).
pub fn rsa_sha256_verify(spki: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = rsa::RsaPublicKey::from_public_key_der(spki) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(sig) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key)
        .verify(message, &sig)
        .is_ok()
}

/// Base64 as Node's `Buffer.from(s, 'base64')` reads it: either alphabet,
/// anything else skipped, up to the first `=`.
pub fn base64_loose(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut bits, mut held) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
        bits &= (1 << held) - 1;
    }
    out
}

/// A PEM (or bare base64) public key as the original's `formatPem` takes
/// it: literal `\n`s, `-----BEGIN/END …-----` lines and white space
/// dropped; `None` when what is left is not base64.
pub fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let pem = pem.replace("\\n", "\n");
    let mut text = String::new();
    let mut rest = pem.as_str();
    loop {
        let marker = ["-----BEGIN ", "-----END "]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min();
        let Some((start, marker_len)) = marker else {
            break;
        };
        let after = &rest[start + marker_len..];
        match after.find("-----") {
            Some(end) if end > 0 && !after[..end].contains('-') => {
                text.push_str(&rest[..start]);
                rest = &after[end + 5..];
            }
            _ => break,
        }
    }
    text.push_str(rest);
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return None;
    }
    Some(base64_loose(&text))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_and_its_hmac_match_the_standard_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?").unwrap()),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(&hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .unwrap()),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn base64_is_read_as_node_reads_it() {
        assert_eq!(base64_loose("aGVsbG8="), b"hello");
        assert_eq!(base64_loose("aGVsbG8"), b"hello");
        assert_eq!(base64_loose("aGV s\nbG8=trailing"), b"hello");
        assert_eq!(base64_loose("-_8="), base64_loose("+/8="));
        assert!(base64_loose("!!").is_empty());
    }

    /// A 2048-bit key and a signature made with `openssl dgst -sha256 -sign`.
    pub const PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA5mtcOqX+lsRH6oqQ8vdTDkpNVh/cFS+ica7tOOzgOyE6PEMiCgVqUHck+usDIXqhfGvPf290+qBg8vTuLTaBDM49Gq8xpClJBh3s4ZKuKjo3Od1oIXXevH/IDRmmkRctSG/orFbrVbFHzHC0K18Yg61eQ7M9tmZzzY9TEf/D8fiO7QyF6RKb5ZVnMeg786M22fOETHSUN5Cqf3wATVp5eCIphbNUQmYuV0fGSxtVwfoX63wqTswDD6xKqEcONPccx7mxK3irPhMX7Je956cqhsE4LG4RJWxlf0a9gJ8XGNHzp4SH+14dzWk0p58FRDLR1Rp9mmKYiXZYrWaGJwt3HQIDAQAB";
    pub const MESSAGE: &[u8] = br#"{"type":"ContactCreate","locationId":"loc-1"}"#;
    pub const SIGNATURE: &str = "f2blrCycZsKG35Pv10sg0dWgxEw08zaeu/xXBOTQ7dPqzsn9kzE7Cdkhn8lXz43GGvFjGcuAt3kbOt7zxYfwsDY5xVvablkbAfdW4lgkWy5OKcz2gKwYCEVl6h7Bi+mAEyiJT8ghm4aRPzFk97/rZiGK8SSzEzaYlTk0nHYx0IHRIINb0/KSaggJoPTVVuRiHUkAsP/vGnj4ub7C8gcuMfqqf9KcyL5VUJFoGy44i0JRbv8kwOLb04dziBy5QvekRVwo2yZw2uqSp4Sv1DVQ9uvIGi/dJBuhqySnnnQRaN7SMK6rX7tNaq2KfKhloUTKVB4q5GA9kgjSKHfpGO4kbg==";

    #[test]
    fn rsa_signatures_are_verified() {
        let pem = format!("-----BEGIN PUBLIC KEY-----\\n{PUBLIC_KEY}\\n-----END PUBLIC KEY-----");
        let key = pem_body(&pem).unwrap();
        assert_eq!(key, pem_body(PUBLIC_KEY).unwrap());
        let sig = base64_loose(SIGNATURE);
        assert!(rsa_sha256_verify(&key, MESSAGE, &sig));
        assert!(!rsa_sha256_verify(&key, b"{}", &sig));
        let mut flipped = sig.clone();
        flipped[100] ^= 1;
        assert!(!rsa_sha256_verify(&key, MESSAGE, &flipped));
        assert!(!rsa_sha256_verify(&key, MESSAGE, &sig[1..]));
        // Zeros, all ones, and any key cut short: refused, not a crash.
        assert!(!rsa_sha256_verify(&key, MESSAGE, &vec![0; sig.len()]));
        assert!(!rsa_sha256_verify(&key, MESSAGE, &vec![0xff; sig.len()]));
        for cut in 0..key.len() {
            assert!(!rsa_sha256_verify(&key[..cut], MESSAGE, &sig));
        }
        assert!(pem_body("not base64 at all!").is_none());
    }
}
