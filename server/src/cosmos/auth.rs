//! Cosmos DB master-key authentication: `Authorization: type=master&ver=1.0&sig=<base64>`,
//! URL-encoded, where the signature is HMAC-SHA256 with the base64-decoded account key over
//! `verb\nresourcetype\nresourcelink\nx-ms-date\n\n` (verb, type and date lowercased; the link
//! name-based, with no slash at either end).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime};

/// How far a request's `x-ms-date` may be from this server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// A master key, decoded.
#[derive(Clone)]
pub struct MasterKey(Vec<u8>);

impl MasterKey {
    /// The key of a key file, if it is base64 (as Cosmos master keys are).
    pub fn from_base64(text: &str) -> Option<Self> {
        STANDARD
            .decode(text.trim())
            .ok()
            .filter(|k| !k.is_empty())
            .map(MasterKey)
    }

    /// The signature of one request, base64 (what `sig=` carries, before URL encoding).
    pub fn sign(&self, verb: &str, resource_type: &str, link: &str, date: &str) -> String {
        STANDARD.encode(
            self.mac(verb, resource_type, link, date)
                .finalize()
                .into_bytes(),
        )
    }

    /// The `Authorization` header value of a request, as an SDK sends it: the URL-encoded
    /// `type=master&ver=1.0&sig=…` token signing `verb`, the resource `path` names (decoded, as
    /// [`resource_of`] reads it) and `date` (the request's `x-ms-date`).
    pub fn authorization(&self, verb: &str, path: &str, date: &str) -> String {
        let (resource_type, link) = resource_of(path);
        let raw = format!(
            "type=master&ver=1.0&sig={}",
            self.sign(verb, &resource_type, &link, date)
        );
        percent_encoding::utf8_percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn mac(&self, verb: &str, resource_type: &str, link: &str, date: &str) -> Hmac<Sha256> {
        let text = format!(
            "{}\n{}\n{}\n{}\n\n",
            verb.to_lowercase(),
            resource_type.to_lowercase(),
            link,
            date.to_lowercase()
        );
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key");
        mac.update(text.as_bytes());
        mac
    }

    /// Checks an `Authorization` header value against the request it came with. The
    /// comparison is constant-time (`Mac::verify_slice`).
    pub fn verify(
        &self,
        header: &str,
        verb: &str,
        resource_type: &str,
        link: &str,
        date: &str,
        now: SystemTime,
    ) -> Result<(), String> {
        let sig = signature_of(header)?;
        let when = httpdate::parse_http_date(date).map_err(|_| {
            format!(
                "x-ms-date {date:?} is not an HTTP date (such as \"Tue, 01 Dec 2026 10:00:00 GMT\")"
            )
        })?;
        let skew = now
            .duration_since(when)
            .or_else(|_| when.duration_since(now))
            .unwrap_or_default();
        if skew > MAX_SKEW {
            return Err(format!(
                "x-ms-date {date:?} is {} s from this server's clock; at most {} s are allowed",
                skew.as_secs(),
                MAX_SKEW.as_secs()
            ));
        }
        let given = STANDARD
            .decode(sig)
            .map_err(|_| "the signature is not base64".to_owned())?;
        self.mac(verb, resource_type, link, date)
            .verify_slice(&given)
            .map_err(|_| {
                format!(
                    "the signature does not match: the server signed \"{}\\n{}\\n{link}\\n{}\\n\\n\" with the account key",
                    verb.to_lowercase(),
                    resource_type.to_lowercase(),
                    date.to_lowercase()
                )
            })
    }
}

/// The `sig` of a master-key `Authorization` value (URL-encoded as the SDKs send it).
fn signature_of(header: &str) -> Result<String, String> {
    let decoded = percent_encoding::percent_decode_str(header)
        .decode_utf8()
        .map_err(|_| "the Authorization header does not decode".to_owned())?;
    let mut kind = None;
    let mut sig = None;
    for part in decoded.split('&') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => {}
        }
    }
    match kind {
        Some("master") => {}
        Some("resource") | Some("aad") => {
            return Err(format!(
                "{} tokens are not supported: sign with the master key",
                kind.unwrap_or_default()
            ));
        }
        _ => return Err("the Authorization header is not type=master&ver=1.0&sig=…".to_owned()),
    }
    sig.map(str::to_owned)
        .ok_or_else(|| "the Authorization header has no sig".to_owned())
}

/// The resource type and link a request signs, from its (decoded) path: `/dbs/a/colls/b/docs`
/// signs type `docs` and link `dbs/a/colls/b`; `/dbs/a/colls/b/docs/c` type `docs` and link
/// `dbs/a/colls/b/docs/c`; `/` type and link empty.
pub fn resource_of(path: &str) -> (String, String) {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.len() {
        0 => (String::new(), String::new()),
        n if n % 2 == 1 => (segments[n - 1].to_owned(), segments[..n - 1].join("/")),
        n => (segments[n - 2].to_owned(), segments.join("/")),
    }
}

/// What a request may have signed: [`resource_of`] its path, and for the JavaScript SDK's
/// conflict read (`…/conflicts/{id}/conflicts`, signed as type `users` over the conflict's
/// link) that too.
pub fn signed_resources(path: &str) -> Vec<(String, String)> {
    let (ty, link) = resource_of(path);
    let mut out = vec![(ty.clone(), link.clone())];
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.len() == 7 && segments[4] == "conflicts" && segments[6] == "conflicts" {
        out.push(("users".to_owned(), segments[..6].join("/")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Cosmos DB emulator's well-known key.
    const EMULATOR_KEY: &str =
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

    fn header(sig: &str) -> String {
        let raw = format!("type=master&ver=1.0&sig={sig}");
        percent_encoding::utf8_percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn resource_types_and_links_follow_the_path() {
        assert_eq!(resource_of("/"), (String::new(), String::new()));
        assert_eq!(resource_of("/dbs"), ("dbs".into(), String::new()));
        assert_eq!(resource_of("/dbs/"), ("dbs".into(), String::new()));
        assert_eq!(resource_of("/dbs/a"), ("dbs".into(), "dbs/a".into()));
        assert_eq!(
            resource_of("/dbs/a/colls/"),
            ("colls".into(), "dbs/a".into())
        );
        assert_eq!(
            resource_of("/dbs/a/colls/b/docs/c d"),
            ("docs".into(), "dbs/a/colls/b/docs/c d".into())
        );
    }

    #[test]
    fn a_signature_verifies_and_any_change_fails() {
        let key = MasterKey::from_base64(EMULATOR_KEY).expect("base64");
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let sig = key.sign("GET", "docs", "dbs/a/colls/b/docs/c", &date);
        let ok = key.verify(
            &header(&sig),
            "GET",
            "docs",
            "dbs/a/colls/b/docs/c",
            &date,
            now,
        );
        assert_eq!(ok, Ok(()));
        // The verb and type compare lowercased, as the SDKs sign them.
        assert!(
            key.verify(
                &header(&sig),
                "get",
                "DOCS",
                "dbs/a/colls/b/docs/c",
                &date,
                now
            )
            .is_ok()
        );
        for (verb, ty, link) in [
            ("PUT", "docs", "dbs/a/colls/b/docs/c"),
            ("GET", "colls", "dbs/a/colls/b/docs/c"),
            ("GET", "docs", "dbs/a/colls/b/docs/C"),
        ] {
            assert!(
                key.verify(&header(&sig), verb, ty, link, &date, now)
                    .is_err()
            );
        }
        let other = MasterKey::from_base64("b3RoZXIga2V5").expect("base64");
        assert!(
            other
                .verify(
                    &header(&sig),
                    "GET",
                    "docs",
                    "dbs/a/colls/b/docs/c",
                    &date,
                    now
                )
                .is_err()
        );
        assert!(
            key.verify(
                "type=resource&ver=1.0&sig=x",
                "GET",
                "docs",
                "x",
                &date,
                now
            )
            .is_err()
        );
    }

    #[test]
    fn a_date_more_than_fifteen_minutes_off_is_refused() {
        let key = MasterKey::from_base64(EMULATOR_KEY).expect("base64");
        let now = SystemTime::now();
        for off in [Duration::from_secs(14 * 60), Duration::from_secs(16 * 60)] {
            let then = now - off;
            let date = httpdate::fmt_http_date(then);
            let sig = key.sign("GET", "dbs", "", &date);
            let r = key.verify(&header(&sig), "GET", "dbs", "", &date, now);
            assert_eq!(r.is_ok(), off < MAX_SKEW, "{off:?}: {r:?}");
        }
        let sig = key.sign("GET", "dbs", "", "yesterday");
        assert!(
            key.verify(&header(&sig), "GET", "dbs", "", "yesterday", now)
                .is_err()
        );
    }
}
