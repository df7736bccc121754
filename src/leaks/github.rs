//! GitHub's secret-scanning partner protocol, as data: the headers a report
//! is signed in, the key list GitHub publishes, the report and the feedback
//! answer, and the check of a signature (ECDSA P-256 over SHA-256 of the
//! raw body, with *ring*). Pure: no I/O (the keys are fetched by `keys`),
//! and it never keeps or prints a reported token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Names the key a report is signed with.
pub const KEY_ID_HEADER: &str = "github-public-key-identifier";
/// The base64 DER ECDSA signature of the raw body.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The fixed DER head of a P-256 `SubjectPublicKeyInfo` (id-ecPublicKey,
/// prime256v1, a 66-byte bit string): what follows is the 65-byte
/// uncompressed point *ring* verifies with.
const P256_SPKI_HEAD: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// An uncompressed P-256 point: `04 || x || y`.
const P256_POINT_LEN: usize = 65;

/// GitHub's key list (`GET /meta/public_keys/secret_scanning`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyListJson {
    pub public_keys: Vec<KeyJson>,
}

/// One key of the list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyJson {
    pub key_identifier: String,
    /// PEM `PUBLIC KEY` (SPKI).
    pub key: String,
    #[serde(default)]
    pub is_current: bool,
}

/// A P-256 public key, ready to verify with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub id: String,
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

/// Why a key list or one of its keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyListError {
    #[error(
        "the key list is not GitHub's JSON ({{\"public_keys\":[{{\"key_identifier\",\"key\"}}]}}): {0}"
    )]
    Shape(String),
    #[error("the key list holds no usable ECDSA P-256 key")]
    NoKeys,
}

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BadSignature {
    #[error("the signature is not base64")]
    Encoding,
    #[error("the signature does not match the body and the named key")]
    Mismatch,
}

impl PublicKey {
    /// A key from its PEM SPKI; `None` when it is not an ECDSA P-256 key.
    pub fn from_pem(id: &str, pem: &str) -> Option<Self> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).ok()?;
        let der: &[u8] = der.as_ref();
        let point = der.strip_prefix(&P256_SPKI_HEAD[..])?;
        (point.len() == P256_POINT_LEN && point[0] == 0x04).then(|| Self {
            id: id.to_owned(),
            point: point.to_vec(),
        })
    }

    /// Checks `signature` (base64 DER ECDSA, as GitHub sends it) over `body`.
    pub fn verify(&self, signature: &str, body: &[u8]) -> Result<(), BadSignature> {
        let sig = STANDARD
            .decode(signature.trim())
            .map_err(|_| BadSignature::Encoding)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(body, &sig)
            .map_err(|_| BadSignature::Mismatch)
    }
}

/// The usable keys of a key list (others are skipped with a warning).
pub fn parse_key_list(json: &[u8]) -> Result<Vec<PublicKey>, KeyListError> {
    let list: KeyListJson =
        serde_json::from_slice(json).map_err(|e| KeyListError::Shape(e.to_string()))?;
    let keys: Vec<PublicKey> = list
        .public_keys
        .iter()
        .filter_map(|k| {
            let key = PublicKey::from_pem(&k.key_identifier, &k.key);
            if key.is_none() {
                tracing::warn!(
                    key_identifier = %k.key_identifier,
                    "a secret-scanning key is not an ECDSA P-256 public key; skipped"
                );
            }
            key
        })
        .collect();
    if keys.is_empty() {
        return Err(KeyListError::NoKeys);
    }
    Ok(keys)
}

/// One match in a report. Unknown fields are ignored (GitHub may add some).
/// `Debug` never shows the token.
#[derive(Clone, Deserialize)]
pub struct Match {
    pub token: String,
    #[serde(rename = "type", default)]
    pub token_type: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub source: String,
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Match")
            .field("token", &"***")
            .field("token_type", &self.token_type)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// What a reported token was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A real token of this gate (now revoked).
    TruePositive,
    /// Not a token of this gate.
    FalsePositive,
}

/// One entry of the feedback answer.
#[derive(Debug, Clone, Serialize)]
pub struct Feedback {
    /// Lower-case hex SHA-256 of the reported token, as GitHub matches it.
    pub token_hash: String,
    pub token_type: String,
    pub label: Label,
}

/// Hex SHA-256 of a reported value (never the value itself).
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_never_shows_its_token() {
        let m: Match =
            serde_json::from_str(r#"{"token":"hwz_s3cretvalue","type":"hawzu","url":"u"}"#)
                .unwrap();
        let dump = format!("{m:?}");
        assert!(!dump.contains("s3cretvalue"), "{dump}");
        assert!(dump.contains("hawzu"), "{dump}");
    }
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn pem_of(pair: &EcdsaKeyPair) -> String {
        let mut der = P256_SPKI_HEAD.to_vec();
        der.extend_from_slice(pair.public_key().as_ref());
        let b64 = STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    #[test]
    fn a_signature_verifies_only_over_its_own_body_and_key() {
        let (pair, other) = (key_pair(), key_pair());
        let key = PublicKey::from_pem("k1", &pem_of(&pair)).unwrap();
        let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
        let sig = pair.sign(&SystemRandom::new(), body).unwrap();
        let sig = STANDARD.encode(sig.as_ref());
        assert_eq!(key.verify(&sig, body), Ok(()));
        assert_eq!(key.verify(&sig, b"[]"), Err(BadSignature::Mismatch));
        assert_eq!(key.verify("not base64!", body), Err(BadSignature::Encoding));
        let forged = other.sign(&SystemRandom::new(), body).unwrap();
        assert_eq!(
            key.verify(&STANDARD.encode(forged.as_ref()), body),
            Err(BadSignature::Mismatch)
        );
    }

    #[test]
    fn key_lists_keep_p256_keys_and_refuse_other_shapes() {
        let pair = key_pair();
        let json = serde_json::json!({"public_keys": [
            {"key_identifier": "good", "key": pem_of(&pair), "is_current": true},
            {"key_identifier": "junk", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "is_current": false},
        ]});
        let keys = parse_key_list(json.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, "good");
        assert!(matches!(parse_key_list(b"[]"), Err(KeyListError::Shape(_))));
        assert_eq!(
            parse_key_list(br#"{"public_keys":[]}"#),
            Err(KeyListError::NoKeys)
        );
    }

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
