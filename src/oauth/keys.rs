//! Access-token signing keys: generation, storage in the data directory,
//! scheduled rotation with pre-publication, and the public JWK set
//! (RFC 7517) that `GET /jwks` serves.
//!
//! This module owns `<data_dir>/keys/`: one PKCS#8 PEM file per key
//! (`<kid>.pem`, mode 0600, created with `O_CREAT|O_EXCL`, never
//! overwritten) and `keys.json`, the metadata (state, times) rewritten
//! atomically. At any time the set holds exactly one `current` key (signs),
//! one `next` key (already published, so verifiers that cache the JWKS know
//! it before the first token it signs), and zero or more `retired` keys
//! still published until the tokens they signed have expired.
//!
//! It must never: let a key sign or verify with more than one algorithm
//! (RFC 8725 §3.1), put a private member in a JWK, overwrite or chmod a key
//! file, or read the wall clock (`now` is always an argument).
//!
//! Key ids are `base64url(SHA-256(SubjectPublicKeyInfo DER))` truncated to
//! 16 characters (96 bits): a fingerprint of the public key, not the RFC 7638
//! JWK thumbprint. They are checked against the key file on every load, so a
//! swapped file is refused.

use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use zeroize::Zeroizing;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Name of the metadata file inside the key directory.
pub const METADATA_FILE: &str = "keys.json";

/// Length of a key id in characters (12 digest octets in base64url).
pub const KID_LEN: usize = 16;

/// Version of the `keys.json` format.
const METADATA_VERSION: u32 = 1;
/// `keys.json` is ours and small; anything larger is not one.
const MAX_METADATA_BYTES: u64 = 1 << 20;
/// A PKCS#8 PEM of an RSA-8192 key is about 6.5 KiB; ours are far smaller.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The JWS algorithms slcs signs access tokens with. Each key is bound to
/// exactly one of them for its whole life (RFC 8725 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4); the default.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037 §3.1).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key (RFC 7518 §3.3).
    #[serde(rename = "RS256")]
    Rs256,
}

impl SigningAlgorithm {
    /// The JWA name, as in a JWS `alg` header and a JWK `alg` member.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// The `jsonwebtoken` algorithm this maps to.
    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name slcs does not sign with.
#[derive(Debug, thiserror::Error)]
#[error("unknown signing algorithm {0:?}: expected ES256, EdDSA or RS256")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for SigningAlgorithm {
    type Err = UnknownAlgorithm;

    /// Exact JWA names: RFC 7515 §4.1.1 `alg` values are case-sensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Self::Es256),
            "EdDSA" => Ok(Self::EdDsa),
            "RS256" => Ok(Self::Rs256),
            other => Err(UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Signs new tokens; published.
    Current,
    /// Published ahead of use; becomes current at the next rotation.
    Next,
    /// No longer signs; published and accepted until its `verify_until`.
    Retired,
}

/// Why the key set could not be created, loaded or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A private key file is readable or writable by group or others.
    #[error("{0} is accessible to other users (mode {1:o}); run `chmod 600` on it")]
    InsecureKeyFile(PathBuf, u32),
    /// The key directory is writable by group or others, so its files could
    /// be replaced.
    #[error("{0} is writable by other users (mode {1:o}); run `chmod 700` on it")]
    InsecureDirectory(PathBuf, u32),
    /// Key files exist without `keys.json` (an interrupted first start or a
    /// lost metadata file). slcs does not guess which keys to trust.
    #[error(
        "{0} holds key files but no {METADATA_FILE}; restore {METADATA_FILE}, or remove the key files to create new keys"
    )]
    Incomplete(PathBuf),
    /// `keys.json` or a key file cannot be parsed or is inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key generation failed.
    #[error("cannot generate a {0} signing key")]
    Generate(SigningAlgorithm),
    /// A duration does not fit the calendar (years beyond 9999).
    #[error("{0} is out of range")]
    DurationOutOfRange(&'static str),
    /// The crypto library refused to sign.
    #[error("signing failed")]
    Sign,
    /// The configured algorithm name is not one slcs signs with.
    #[error(transparent)]
    Config(UnknownAlgorithm),
    /// The key set shared through the store cannot be sealed or opened.
    #[error("shared signing keys: {0}")]
    Sealed(String),
}

/// One signing key with its metadata. Debug output names the key only;
/// the private half never leaves this module except as a signature.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    state: KeyState,
    created_at: OffsetDateTime,
    activated_at: Option<OffsetDateTime>,
    retired_at: Option<OffsetDateTime>,
    verify_until: Option<OffsetDateTime>,
    material: KeyMaterial,
    /// The private key as PKCS#8 DER, kept to seal it for a shared store
    /// (see [`KeySet::seal`]); wiped on drop.
    pkcs8: Zeroizing<Vec<u8>>,
    spki_der: Vec<u8>,
    jwk: serde_json::Value,
    decoding_key: DecodingKey,
    signature_len: usize,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("retired_at", &self.retired_at)
            .field("verify_until", &self.verify_until)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Key id (`kid` header and JWK member).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key signs and verifies with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// Where the key is in its life.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// When the key was generated.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// When the key became current (None while `next`).
    pub fn activated_at(&self) -> Option<OffsetDateTime> {
        self.activated_at
    }

    /// When the key was retired.
    pub fn retired_at(&self) -> Option<OffsetDateTime> {
        self.retired_at
    }

    /// Until when a retired key still verifies and is published.
    pub fn verify_until(&self) -> Option<OffsetDateTime> {
        self.verify_until
    }

    /// The public key as DER `SubjectPublicKeyInfo`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The public JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2), with `kid`,
    /// `alg` and `use: "sig"`. Holds no private member by construction.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// Signs a JWS signing input with this key's algorithm.
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.material {
            // RFC 7518 §3.4: R || S, 64 octets (the FIXED encoding).
            KeyMaterial::Es256(pair) => pair
                .sign(&rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            KeyMaterial::EdDsa(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            KeyMaterial::Rs256(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| KeyError::Sign)?;
                Ok(signature)
            }
        }
    }

    /// The verification key, built from the published JWK members so that
    /// slcs verifies with exactly what it publishes.
    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding_key
    }

    /// Length of a valid signature in octets (64 for ES256 and EdDSA, the
    /// modulus length for RS256).
    pub(super) fn signature_len(&self) -> usize {
        self.signature_len
    }

    fn is_published_at(&self, now: OffsetDateTime) -> bool {
        match self.state {
            KeyState::Current | KeyState::Next => true,
            KeyState::Retired => self.verify_until.is_some_and(|until| now < until),
        }
    }

    fn record(&self) -> KeyRecord {
        KeyRecord {
            kid: self.kid.clone(),
            alg: self.alg,
            state: self.state,
            created_at: self.created_at,
            activated_at: self.activated_at,
            retired_at: self.retired_at,
            verify_until: self.verify_until,
        }
    }
}

/// The signing keys of this authorization server: always exactly one
/// current and one next key (by construction), and the retired keys.
#[derive(Debug)]
pub struct KeySet {
    /// Algorithm of keys generated from now on (existing keys keep theirs).
    alg: SigningAlgorithm,
    current: SigningKey,
    next: SigningKey,
    /// Newest retirement first.
    retired: Vec<SigningKey>,
}

impl KeySet {
    /// Loads the key set from `dir`, or on first start creates `dir` (0700)
    /// with a `current` and a pre-published `next` key of algorithm `alg`.
    ///
    /// Loading never writes. Keys already on disk keep their algorithm; a
    /// changed `alg` applies to keys generated by later rotations, so a
    /// switch takes two rotations and never surprises a verifier.
    pub fn load_or_create(
        dir: &Path,
        alg: SigningAlgorithm,
        now: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        ensure_private_dir(dir)?;
        let metadata = dir.join(METADATA_FILE);
        match fs::symlink_metadata(&metadata) {
            Ok(_) => Self::load(dir, alg),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(dir, alg, now),
            Err(source) => Err(KeyError::Io {
                path: metadata,
                source,
            }),
        }
    }

    /// Rotates: `next` becomes `current`, `current` becomes `retired` and
    /// stays published and accepted until `now + keep_retired_for` (choose at
    /// least the access-token lifetime plus leeway, so every token it signed
    /// still verifies), a new `next` is generated, and retired keys past
    /// their time leave the set.
    ///
    /// Order: the new key file is written, then `keys.json` is replaced
    /// atomically, then `self` changes, then the files of dropped keys are
    /// deleted (they can no longer sign anything anyone accepts). If the
    /// metadata cannot be written, `self` is unchanged and the new key file
    /// is left unused. A failed deletion is reported as an error although
    /// the rotation itself is then complete.
    pub fn rotate(
        &mut self,
        dir: &Path,
        now: OffsetDateTime,
        keep_retired_for: Duration,
    ) -> Result<(), KeyError> {
        self.rotate_in(Some(dir), now, keep_retired_for)
    }

    /// [`KeySet::rotate`] for a set kept in a shared store rather than a
    /// directory: the same state changes, no files; the caller stores the
    /// result ([`KeySet::seal`]) and adopts it only once stored.
    pub fn rotate_detached(
        &mut self,
        now: OffsetDateTime,
        keep_retired_for: Duration,
    ) -> Result<(), KeyError> {
        self.rotate_in(None, now, keep_retired_for)
    }

    fn rotate_in(
        &mut self,
        dir: Option<&Path>,
        now: OffsetDateTime,
        keep_retired_for: Duration,
    ) -> Result<(), KeyError> {
        let verify_until = add(now, keep_retired_for, "keep_retired_for")?;
        let mut new_next = generate(dir, self.alg, now)?;
        new_next.state = KeyState::Next;

        let mut promoted = self.next.record();
        promoted.state = KeyState::Current;
        promoted.activated_at = Some(now);
        let mut demoted = self.current.record();
        demoted.state = KeyState::Retired;
        demoted.retired_at = Some(now);
        demoted.verify_until = Some(verify_until);
        let mut records = vec![promoted, new_next.record(), demoted];
        records.extend(
            self.retired
                .iter()
                .filter(|k| k.is_published_at(now))
                .map(SigningKey::record),
        );
        let Some(dir) = dir else {
            self.adopt_rotation(new_next, now, verify_until);
            return Ok(());
        };
        write_metadata(dir, &records)?;

        // Persisted: now mirror it in memory.
        let dropped = self.adopt_rotation(new_next, now, verify_until);
        for key in &dropped {
            let path = key_path(dir, &key.kid);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(KeyError::Io { path, source }),
            }
        }
        if !dropped.is_empty() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// The in-memory half of a rotation; returns the retired keys that
    /// left the set.
    fn adopt_rotation(
        &mut self,
        new_next: SigningKey,
        now: OffsetDateTime,
        verify_until: OffsetDateTime,
    ) -> Vec<SigningKey> {
        let mut promoted = std::mem::replace(&mut self.next, new_next);
        promoted.state = KeyState::Current;
        promoted.activated_at = Some(now);
        let mut demoted = std::mem::replace(&mut self.current, promoted);
        demoted.state = KeyState::Retired;
        demoted.retired_at = Some(now);
        demoted.verify_until = Some(verify_until);
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|k| k.is_published_at(now));
        self.retired = kept;
        self.retired.insert(0, demoted);
        dropped
    }

    /// A new set (a current and a pre-published next key) that lives in a
    /// shared store, not a directory.
    pub fn generate_detached(alg: SigningAlgorithm, now: OffsetDateTime) -> Result<Self, KeyError> {
        Self::generate_set(None, alg, now)
    }

    fn generate_set(
        dir: Option<&Path>,
        alg: SigningAlgorithm,
        now: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let mut current = generate(dir, alg, now)?;
        current.state = KeyState::Current;
        current.activated_at = Some(now);
        let mut next = generate(dir, alg, now)?;
        next.state = KeyState::Next;
        Ok(Self {
            alg,
            current,
            next,
            retired: Vec::new(),
        })
    }

    /// The set as a shared store keeps it: the metadata in the clear, each
    /// private key sealed (AES-256-GCM, random nonce, the key's metadata as
    /// associated data) under `kek`, so a database dump alone does not give
    /// away the keys that sign access tokens.
    pub fn seal(&self, kek: &KeySealingKey) -> Result<Vec<u8>, KeyError> {
        let keys = self
            .keys()
            .map(|key| {
                let record = key.record();
                let aad = sealing_aad(&record)?;
                Ok(SealedKey {
                    sealed: STANDARD.encode(kek.seal(&aad, &key.pkcs8)?),
                    record,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        serde_json::to_vec(&SealedKeySet {
            version: METADATA_VERSION,
            keys,
        })
        .map_err(|e| KeyError::Sealed(e.to_string()))
    }

    /// Opens a set sealed by [`KeySet::seal`] under the same `kek`; keys
    /// generated by later rotations use `alg`.
    pub fn unseal(
        sealed: &[u8],
        kek: &KeySealingKey,
        alg: SigningAlgorithm,
    ) -> Result<Self, KeyError> {
        let set: SealedKeySet =
            serde_json::from_slice(sealed).map_err(|e| KeyError::Sealed(e.to_string()))?;
        if set.version != METADATA_VERSION {
            return Err(KeyError::Sealed(format!(
                "unsupported version {}",
                set.version
            )));
        }
        let records: Vec<KeyRecord> = set.keys.iter().map(|k| k.record.clone()).collect();
        validate_records(&records).map_err(KeyError::Sealed)?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for sealed_key in set.keys {
            let record = sealed_key.record;
            let aad = sealing_aad(&record)?;
            let ciphertext = STANDARD
                .decode(&sealed_key.sealed)
                .map_err(|e| KeyError::Sealed(format!("key {}: {e}", record.kid)))?;
            let der = kek.open(&aad, &ciphertext).ok_or_else(|| {
                KeyError::Sealed(format!(
                    "key {} cannot be opened: this replica's secret-pepper is not the one the shared keys were sealed with (every replica needs the same one), or the record was altered",
                    record.kid
                ))
            })?;
            let expected_kid = record.kid.clone();
            let key = from_pkcs8(&der, record)
                .map_err(|message| KeyError::Sealed(format!("key {expected_kid}: {message}")))?;
            if key.kid != expected_kid {
                return Err(KeyError::Sealed(format!(
                    "the key sealed as {expected_kid} is {}",
                    key.kid
                )));
            }
            keys.push(key);
        }
        Self::assemble(alg, keys).map_err(KeyError::Sealed)
    }

    /// A set from its keys (their states already checked by
    /// `validate_records`): the current, the next, the retired newest first.
    fn assemble(alg: SigningAlgorithm, keys: Vec<SigningKey>) -> Result<Self, String> {
        let (mut current, mut next, mut retired) = (None, None, Vec::new());
        for key in keys {
            match key.state {
                KeyState::Current => current = Some(key),
                KeyState::Next => next = Some(key),
                KeyState::Retired => retired.push(key),
            }
        }
        let (Some(current), Some(next)) = (current, next) else {
            return Err("expected exactly one current and one next key".into());
        };
        retired.sort_by_key(|k: &SigningKey| std::cmp::Reverse(k.retired_at));
        Ok(Self {
            alg,
            current,
            next,
            retired,
        })
    }

    /// Whether the current key has been current for `rotate_every` or more.
    pub fn rotation_due(&self, now: OffsetDateTime, rotate_every: Duration) -> bool {
        // Age counts from activation, not creation: the new current key was
        // generated a whole period earlier, as `next`.
        let since = self.current.activated_at.unwrap_or(self.current.created_at);
        match time::Duration::try_from(rotate_every) {
            Ok(period) => now - since >= period,
            // A period beyond the calendar never elapses.
            Err(_) => false,
        }
    }

    /// The JWK set to publish (RFC 7517 §5): current, next and retired keys
    /// still within their verification window; public members only.
    pub fn jwks(&self, now: OffsetDateTime) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys()
            .filter(|k| k.is_published_at(now))
            .map(|k| k.jwk.clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The pre-published key that becomes current at the next rotation.
    pub fn next(&self) -> &SigningKey {
        &self.next
    }

    /// The key named `kid` if a token signed by it may be accepted at
    /// `now`: current, next, or retired within its window. `kid` is only a
    /// lookup key into this fixed set (RFC 8725 §3.10).
    pub fn verifying_key(&self, kid: &str, now: OffsetDateTime) -> Option<&SigningKey> {
        self.keys().find(|k| k.kid == kid && k.is_published_at(now))
    }

    /// Every key in the set: current, next, then retired keys newest first,
    /// including retired keys past their window until the next rotation
    /// removes them.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        [&self.current, &self.next]
            .into_iter()
            .chain(self.retired.iter())
    }

    /// Algorithm of keys generated by later rotations.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    fn create(dir: &Path, alg: SigningAlgorithm, now: OffsetDateTime) -> Result<Self, KeyError> {
        // Key files without metadata: an interrupted first start or a lost
        // keys.json. Refuse rather than silently start over.
        let entries = fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(dir))?;
            if entry.path().extension().is_some_and(|ext| ext == "pem") {
                return Err(KeyError::Incomplete(dir.to_path_buf()));
            }
        }
        let set = Self::generate_set(Some(dir), alg, now)?;
        write_metadata(dir, &[set.current.record(), set.next.record()])?;
        Ok(set)
    }

    fn load(dir: &Path, alg: SigningAlgorithm) -> Result<Self, KeyError> {
        let path = dir.join(METADATA_FILE);
        let invalid = |message: String| KeyError::Invalid {
            path: path.clone(),
            message,
        };
        let bytes = read_bounded(&path, MAX_METADATA_BYTES)?;
        let file: MetadataFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if file.version != METADATA_VERSION {
            return Err(invalid(format!("unsupported version {}", file.version)));
        }
        validate_records(&file.keys).map_err(invalid)?;
        let keys = file
            .keys
            .into_iter()
            .map(|record| load_key(dir, record))
            .collect::<Result<Vec<_>, _>>()?;
        Self::assemble(alg, keys).map_err(invalid)
    }
}

// ---------------------------------------------------------------------------
// Private: key material, metadata, files.

enum KeyMaterial {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRecord {
    kid: String,
    alg: SigningAlgorithm,
    state: KeyState,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    activated_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    retired_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    verify_until: Option<OffsetDateTime>,
}

/// A key set as a shared store holds it ([`KeySet::seal`]).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedKeySet {
    version: u32,
    keys: Vec<SealedKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedKey {
    record: KeyRecord,
    /// base64(nonce ‖ AES-256-GCM ciphertext ‖ tag) of the PKCS#8 DER.
    sealed: String,
}

/// What a sealed key is bound to: its metadata, so that a sealed key
/// cannot be moved to another record (another kid, state or algorithm).
fn sealing_aad(record: &KeyRecord) -> Result<Vec<u8>, KeyError> {
    let mut aad = b"slcs-signing-key-v1\0".to_vec();
    aad.extend(
        serde_json::to_vec(&(&record.kid, record.alg))
            .map_err(|e| KeyError::Sealed(e.to_string()))?,
    );
    Ok(aad)
}

/// The key-encryption key of a shared key set: AES-256-GCM, derived from
/// the deployment's secret pepper (which every replica holds a copy of
/// anyway, since client secrets are keyed with it).
pub struct KeySealingKey {
    key: aws_lc_rs::aead::LessSafeKey,
}

impl std::fmt::Debug for KeySealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySealingKey")
    }
}

impl KeySealingKey {
    /// A sealing key from 32 secret bytes.
    pub fn new(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, bytes)
            .map_err(|_| KeyError::Sealed("cannot make the sealing key".into()))?;
        Ok(Self {
            key: aws_lc_rs::aead::LessSafeKey::new(unbound),
        })
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
        // A random 96-bit nonce per seal: the set is resealed only at
        // rotations, far below the 2^32 messages per key that random
        // nonces allow (NIST SP 800-38D §8.3).
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Sealed("no randomness".into()))?;
        let mut out = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *out,
            )
            .map_err(|_| KeyError::Sealed("sealing failed".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .ok()?;
        Some(Zeroizing::new(plaintext.to_vec()))
    }
}

fn validate_records(records: &[KeyRecord]) -> Result<(), String> {
    let count = |state| records.iter().filter(|r| r.state == state).count();
    if count(KeyState::Current) != 1 || count(KeyState::Next) != 1 {
        return Err("expected exactly one current and one next key".into());
    }
    for (i, record) in records.iter().enumerate() {
        if !is_valid_kid(&record.kid) {
            return Err(format!("invalid key id {:?}", record.kid));
        }
        if records.iter().skip(i + 1).any(|r| r.kid == record.kid) {
            return Err(format!("key id {} appears twice", record.kid));
        }
        let ok = match record.state {
            KeyState::Current => record.activated_at.is_some() && record.verify_until.is_none(),
            KeyState::Next => record.activated_at.is_none() && record.verify_until.is_none(),
            KeyState::Retired => record.retired_at.is_some() && record.verify_until.is_some(),
        };
        if !ok {
            return Err(format!(
                "key {} has times that do not fit its state",
                record.kid
            ));
        }
    }
    Ok(())
}

/// A kid we could have made: exactly `KID_LEN` base64url characters. Also
/// what makes `<kid>.pem` a safe file name.
fn is_valid_kid(kid: &str) -> bool {
    kid.len() == KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn key_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pem"))
}

fn add(
    now: OffsetDateTime,
    duration: Duration,
    what: &'static str,
) -> Result<OffsetDateTime, KeyError> {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or(KeyError::DurationOutOfRange(what))
}

/// Generates a key, writes its PEM file into `dir` (none for a set kept
/// in a shared store), and returns it (state `Next`, which the caller
/// adjusts).
fn generate(
    dir: Option<&Path>,
    alg: SigningAlgorithm,
    now: OffsetDateTime,
) -> Result<SigningKey, KeyError> {
    let failed = |_| KeyError::Generate(alg);
    // Key material in our own buffers is wiped when dropped; aws-lc
    // cleanses its key objects itself.
    let pkcs8: Zeroizing<Vec<u8>> = Zeroizing::new(match alg {
        SigningAlgorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate()
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
    });
    // Parse back through the same path as a load, so a generated key is
    // exactly what a restart will see.
    let record = KeyRecord {
        kid: String::new(),
        alg,
        state: KeyState::Next,
        created_at: now,
        activated_at: None,
        retired_at: None,
        verify_until: None,
    };
    let key = from_pkcs8(&pkcs8, record).map_err(|_| KeyError::Generate(alg))?;
    if let Some(dir) = dir {
        write_new_file(
            &key_path(dir, &key.kid),
            &Zeroizing::new(encode_pem(&pkcs8)),
        )?;
    }
    Ok(key)
}

fn load_key(dir: &Path, record: KeyRecord) -> Result<SigningKey, KeyError> {
    let path = key_path(dir, &record.kid);
    let invalid = |message: String| KeyError::Invalid {
        path: path.clone(),
        message,
    };
    let text = Zeroizing::new(read_private(&path)?);
    let der = Zeroizing::new(
        decode_pem(&text).ok_or_else(|| invalid("not a PKCS#8 PEM private key".into()))?,
    );
    let expected_kid = record.kid.clone();
    let alg = record.alg;
    let key = from_pkcs8(&der, record)
        .map_err(|message| invalid(format!("not a usable {alg} key: {message}")))?;
    if key.kid != expected_kid {
        return Err(invalid(format!(
            "the key's id is {}, not {expected_kid}; the file was replaced",
            key.kid
        )));
    }
    Ok(key)
}

/// Parses PKCS#8 for `record.alg` and derives kid, JWK, decoding key. The
/// record's kid is replaced by the one computed from the key.
fn from_pkcs8(der: &[u8], record: KeyRecord) -> Result<SigningKey, String> {
    let alg = record.alg;
    let (material, spki_der, params, signature_len) = match alg {
        SigningAlgorithm::Es256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map_err(|e| e.to_string())?;
            let spki = spki(pair.public_key().as_der())?;
            // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
            let point = pair.public_key().as_ref();
            let (x, y) = match (point.first(), point.get(1..33), point.get(33..65)) {
                (Some(4), Some(x), Some(y)) if point.len() == 65 => (x, y),
                _ => return Err("unexpected P-256 public key encoding".into()),
            };
            let params = serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            });
            (KeyMaterial::Es256(pair), spki, params, 64)
        }
        SigningAlgorithm::EdDsa => {
            let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
            let spki = spki(pair.public_key().as_der())?;
            let params = serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            (KeyMaterial::EdDsa(pair), spki, params, 64)
        }
        SigningAlgorithm::Rs256 => {
            let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
            // RFC 7518 §3.3: a key of 2048 bits or larger MUST be used.
            if pair.public_modulus_len() < 256 {
                return Err("RSA modulus shorter than 2048 bits".into());
            }
            let spki = spki(pair.public_key().as_der())?;
            let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            // RFC 7518 §6.3.1: Base64urlUInt, no leading zero octets.
            let params = serde_json::json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.n)),
                "e": URL_SAFE_NO_PAD.encode(strip_leading_zeros(&components.e)),
            });
            let len = pair.public_modulus_len();
            (KeyMaterial::Rs256(pair), spki, params, len)
        }
    };
    let kid = kid_for(&spki_der)?;
    let mut jwk = params;
    if let Some(members) = jwk.as_object_mut() {
        members.insert("kid".into(), kid.clone().into());
        members.insert("alg".into(), alg.name().into());
        members.insert("use".into(), "sig".into());
    }
    let parsed: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwk.clone()).map_err(|e| format!("JWK: {e}"))?;
    let decoding_key = DecodingKey::from_jwk(&parsed).map_err(|e| format!("JWK: {e}"))?;
    Ok(SigningKey {
        kid,
        alg,
        state: record.state,
        created_at: record.created_at,
        activated_at: record.activated_at,
        retired_at: record.retired_at,
        verify_until: record.verify_until,
        material,
        pkcs8: Zeroizing::new(der.to_vec()),
        spki_der,
        jwk,
        decoding_key,
        signature_len,
    })
}

fn spki(
    der: Result<aws_lc_rs::encoding::PublicKeyX509Der<'static>, aws_lc_rs::error::Unspecified>,
) -> Result<Vec<u8>, String> {
    der.map(|d| d.as_ref().to_vec())
        .map_err(|_| "cannot encode the public key".to_owned())
}

/// `base64url(SHA-256(spki))` truncated to 16 characters, i.e. the first
/// 12 digest octets encoded (no partial character).
fn kid_for(spki_der: &[u8]) -> Result<String, String> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
    digest
        .as_ref()
        .get(..12)
        .map(|prefix| URL_SAFE_NO_PAD.encode(prefix))
        .ok_or_else(|| "short digest".to_owned())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes.get(start..).unwrap_or(bytes)
}

fn encode_pem(der: &[u8]) -> Vec<u8> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.extend_from_slice(PEM_BEGIN.as_bytes());
    out.push(b'\n');
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(PEM_END.as_bytes());
    out.push(b'\n');
    out
}

/// Strict: one `PRIVATE KEY` block, nothing around it but whitespace.
fn decode_pem(text: &str) -> Option<Vec<u8>> {
    let body = text.trim().strip_prefix(PEM_BEGIN)?.strip_suffix(PEM_END)?;
    let b64: Zeroizing<String> = Zeroizing::new(body.split_ascii_whitespace().collect());
    STANDARD.decode(b64.as_bytes()).ok()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` with mode 0700, or checks an existing one.
fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))?;
    let meta = fs::symlink_metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(KeyError::Invalid {
            path: dir.to_path_buf(),
            message: "not a directory".into(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode();
        // Whoever can write here can swap keys.json and the key files.
        if mode & 0o022 != 0 {
            return Err(KeyError::InsecureDirectory(dir.to_path_buf(), mode & 0o777));
        }
    }
    Ok(())
}

/// Reads a private key file: a regular file (no symlink), no group or
/// other permission bits, bounded size.
fn read_private(path: &Path) -> Result<String, KeyError> {
    let link = fs::symlink_metadata(path).map_err(io_error(path))?;
    if !link.file_type().is_file() {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    let file = File::open(path).map_err(io_error(path))?;
    // Check the mode of what was opened, not of what the path names now.
    let meta = file.metadata().map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecureKeyFile(path.to_path_buf(), mode & 0o777));
        }
    }
    let bytes = read_limited(file, path, meta.len(), MAX_KEY_FILE_BYTES)?;
    String::from_utf8(bytes).map_err(|_| KeyError::Invalid {
        path: path.to_path_buf(),
        message: "not UTF-8 text".into(),
    })
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, KeyError> {
    let file = File::open(path).map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    read_limited(file, path, len, limit)
}

fn read_limited(file: File, path: &Path, len: u64, limit: u64) -> Result<Vec<u8>, KeyError> {
    if len > limit {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: format!("larger than {limit} bytes"),
        });
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > limit {
        return Err(KeyError::Invalid {
            path: path.to_path_buf(),
            message: format!("larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

/// Creates `path` with `O_CREAT|O_EXCL` and mode 0600 from the first byte,
/// writes, fsyncs the file and its directory. Never overwrites.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    crate::secure_fs::write_new_file(path, contents, true).map_err(io_error(path))
}

/// Replaces `keys.json` atomically: temporary file (0600, exclusive),
/// fsync, rename over the old file, fsync the directory. A crash leaves
/// either the old or the new metadata, never a mix.
fn write_metadata(dir: &Path, records: &[KeyRecord]) -> Result<(), KeyError> {
    let path = dir.join(METADATA_FILE);
    let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
    let file = MetadataFile {
        version: METADATA_VERSION,
        keys: records.to_vec(),
    };
    let mut json = serde_json::to_vec_pretty(&file).map_err(|e| KeyError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    json.push(b'\n');
    // A temporary file left by a crash is ours and stale.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::Io { path: tmp, source }),
    }
    write_new_file(&tmp, &json)?;
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    crate::secure_fs::sync_dir(dir).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn new_set(alg: SigningAlgorithm) -> (tempfile::TempDir, PathBuf, KeySet) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let set = KeySet::load_or_create(&dir, alg, T0).unwrap();
        (tmp, dir, set)
    }

    fn kids(set: &KeySet) -> Vec<(String, KeyState)> {
        set.keys().map(|k| (k.kid.clone(), k.state)).collect()
    }

    #[test]
    fn a_sealed_set_opens_only_with_its_key_and_unaltered() {
        let kek = KeySealingKey::new(&[7; 32]).unwrap();
        let mut set = KeySet::generate_detached(SigningAlgorithm::Es256, T0).unwrap();
        set.rotate_detached(T0 + DAY, HOUR).unwrap();
        let sealed = set.seal(&kek).unwrap();
        // No private key in the clear: the PKCS#8 bytes are not in it.
        let text = String::from_utf8(sealed.clone()).unwrap();
        for key in set.keys() {
            assert!(!text.contains(&STANDARD.encode(&*key.pkcs8)));
        }
        let opened = KeySet::unseal(&sealed, &kek, SigningAlgorithm::Es256).unwrap();
        assert_eq!(kids(&opened), kids(&set));
        assert_eq!(opened.jwks(T0 + DAY), set.jwks(T0 + DAY));
        // It signs what the original verifies.
        let signature = opened.current().sign(b"m").unwrap();
        assert_eq!(signature.len(), set.current().signature_len());

        let other = KeySealingKey::new(&[8; 32]).unwrap();
        let err = KeySet::unseal(&sealed, &other, SigningAlgorithm::Es256).unwrap_err();
        assert!(err.to_string().contains("secret-pepper"), "{err}");

        // A sealed key moved under another record is refused.
        let mut doc: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        let first = keys[0]["sealed"].clone();
        keys[0]["sealed"] = keys[1]["sealed"].clone();
        keys[1]["sealed"] = first;
        let swapped = serde_json::to_vec(&doc).unwrap();
        assert!(KeySet::unseal(&swapped, &kek, SigningAlgorithm::Es256).is_err());
    }

    #[test]
    fn a_detached_rotation_matches_a_directory_rotation() {
        let (_tmp, dir, mut on_disk) = new_set(SigningAlgorithm::EdDsa);
        let kek = KeySealingKey::new(&[1; 32]).unwrap();
        let mut detached =
            KeySet::unseal(&on_disk.seal(&kek).unwrap(), &kek, SigningAlgorithm::EdDsa).unwrap();
        on_disk.rotate(&dir, T0 + DAY, HOUR).unwrap();
        detached.rotate_detached(T0 + DAY, HOUR).unwrap();
        // The same keys change state; only the new next key differs.
        let states = |set: &KeySet| -> Vec<KeyState> { set.keys().map(|k| k.state).collect() };
        assert_eq!(states(&on_disk), states(&detached));
        assert_eq!(on_disk.current().kid, detached.current().kid);
        assert_eq!(on_disk.retired[0].kid, detached.retired[0].kid);
        assert_ne!(on_disk.next().kid, detached.next().kid);
        assert_eq!(detached.retired[0].verify_until, Some(T0 + DAY + HOUR));
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
        ] {
            assert_eq!(alg.name().parse::<SigningAlgorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.name());
            assert_eq!(
                serde_json::to_value(alg).unwrap(),
                serde_json::json!(alg.name())
            );
        }
        assert_eq!(SigningAlgorithm::EdDsa.jwt_algorithm(), Algorithm::EdDSA);
        for bad in ["es256", "EDDSA", "HS256", "none", "ES256 ", ""] {
            assert!(bad.parse::<SigningAlgorithm>().is_err(), "{bad}");
        }
    }

    #[test]
    fn first_start_creates_current_and_next_with_private_modes() {
        for alg in [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
        ] {
            let (_tmp, dir, set) = new_set(alg);
            assert_eq!(set.keys().count(), 2);
            assert_eq!(set.current().state(), KeyState::Current);
            assert_eq!(set.current().activated_at(), Some(T0));
            assert_eq!(set.next().state(), KeyState::Next);
            assert_ne!(set.current().kid(), set.next().kid());
            for key in set.keys() {
                assert_eq!(key.algorithm(), alg);
                assert!(is_valid_kid(key.kid()));
                let path = key_path(&dir, key.kid());
                let text = fs::read_to_string(&path).unwrap();
                assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
                #[cfg(unix)]
                assert_eq!(mode(&path), 0o600);
            }
            #[cfg(unix)]
            {
                assert_eq!(mode(&dir), 0o700);
                assert_eq!(mode(&dir.join(METADATA_FILE)), 0o600);
            }
            assert!(!dir.join("keys.json.tmp").exists());
        }
    }

    #[test]
    fn reload_gives_the_same_keys() {
        let (_tmp, dir, set) = new_set(SigningAlgorithm::Es256);
        let again = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0 + DAY).unwrap();
        let kids = |s: &KeySet| s.keys().map(|k| k.kid().to_owned()).collect::<Vec<_>>();
        assert_eq!(kids(&set), kids(&again));
        assert_eq!(set.jwks(T0), again.jwks(T0));
        assert_eq!(again.current().activated_at(), Some(T0));
    }

    #[test]
    fn kid_is_truncated_spki_sha256() {
        let (_tmp, _dir, set) = new_set(SigningAlgorithm::EdDsa);
        let key = set.current();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key_der());
        let full = URL_SAFE_NO_PAD.encode(digest.as_ref());
        assert_eq!(key.kid(), &full[..KID_LEN]);
    }

    #[test]
    fn jwks_has_public_members_only() {
        for alg in [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
        ] {
            let (_tmp, _dir, set) = new_set(alg);
            let jwks = set.jwks(T0);
            let keys = jwks["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 2);
            let allowed: &[&str] = match alg {
                SigningAlgorithm::Es256 => &["kty", "crv", "x", "y", "kid", "alg", "use"],
                SigningAlgorithm::EdDsa => &["kty", "crv", "x", "kid", "alg", "use"],
                SigningAlgorithm::Rs256 => &["kty", "n", "e", "kid", "alg", "use"],
            };
            for jwk in keys {
                let members = jwk.as_object().unwrap();
                for name in members.keys() {
                    assert!(allowed.contains(&name.as_str()), "{alg}: unexpected {name}");
                }
                // RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2: private members.
                for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                    assert!(!members.contains_key(private), "{alg}: {private}");
                }
                assert_eq!(jwk["alg"], alg.name());
                assert_eq!(jwk["use"], "sig");
            }
            match alg {
                SigningAlgorithm::Es256 => {
                    assert_eq!(keys[0]["kty"], "EC");
                    assert_eq!(keys[0]["crv"], "P-256");
                    assert_eq!(
                        URL_SAFE_NO_PAD
                            .decode(keys[0]["x"].as_str().unwrap())
                            .unwrap()
                            .len(),
                        32
                    );
                }
                SigningAlgorithm::EdDsa => {
                    assert_eq!(keys[0]["kty"], "OKP");
                    assert_eq!(keys[0]["crv"], "Ed25519");
                }
                SigningAlgorithm::Rs256 => {
                    assert_eq!(keys[0]["kty"], "RSA");
                    assert_eq!(keys[0]["e"], "AQAB");
                    let n = URL_SAFE_NO_PAD
                        .decode(keys[0]["n"].as_str().unwrap())
                        .unwrap();
                    assert_eq!(n.len(), 256);
                    assert_ne!(n[0], 0);
                }
            }
            // The private scalar must not appear anywhere in the output.
            let text = serde_json::to_string(&jwks).unwrap();
            assert!(!text.contains("PRIVATE"));
        }
    }

    #[test]
    fn rotation_promotes_next_and_keeps_retired_until_its_time() {
        let (_tmp, dir, mut set) = new_set(SigningAlgorithm::Es256);
        let first = set.current().kid().to_owned();
        let second = set.next().kid().to_owned();

        assert!(!set.rotation_due(T0 + DAY * 29, DAY * 30));
        assert!(set.rotation_due(T0 + DAY * 30, DAY * 30));

        let t1 = T0 + DAY * 30;
        set.rotate(&dir, t1, HOUR).unwrap();
        assert_eq!(set.current().kid(), second);
        assert_eq!(set.current().activated_at(), Some(t1));
        // Age counts from activation: not due again right away.
        assert!(!set.rotation_due(t1, DAY * 30));
        let third = set.next().kid().to_owned();
        assert_eq!(set.next().state(), KeyState::Next);
        let old = set.verifying_key(&first, t1).unwrap();
        assert_eq!(old.state(), KeyState::Retired);
        assert_eq!(old.retired_at(), Some(t1));
        assert_eq!(old.verify_until(), Some(t1 + HOUR));

        let published = |s: &KeySet, at| {
            s.jwks(at)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            published(&set, t1),
            vec![second.clone(), third.clone(), first.clone()]
        );
        assert_eq!(
            published(&set, t1 + HOUR),
            vec![second.clone(), third.clone()]
        );
        assert!(set.verifying_key(&first, t1 + HOUR).is_none());
        assert!(set.verifying_key(&third, t1).is_some(), "next verifies");

        // Survives a restart.
        let reloaded = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, t1).unwrap();
        assert_eq!(published(&reloaded, t1), published(&set, t1));

        // The next rotation drops the expired retired key and its file.
        let t2 = t1 + DAY * 30;
        set.rotate(&dir, t2, HOUR).unwrap();
        assert!(set.keys().all(|k| k.kid() != first));
        assert!(!key_path(&dir, &first).exists());
        assert!(key_path(&dir, &second).exists());
        assert_eq!(set.current().kid(), third);
        assert_eq!(set.keys().count(), 3);
        let reloaded = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, t2).unwrap();
        assert_eq!(reloaded.keys().count(), 3);
    }

    #[test]
    fn changed_algorithm_applies_to_new_keys_only() {
        let (_tmp, dir, _set) = new_set(SigningAlgorithm::Es256);
        let mut set = KeySet::load_or_create(&dir, SigningAlgorithm::EdDsa, T0).unwrap();
        assert_eq!(set.current().algorithm(), SigningAlgorithm::Es256);
        set.rotate(&dir, T0 + DAY, HOUR).unwrap();
        assert_eq!(set.current().algorithm(), SigningAlgorithm::Es256);
        assert_eq!(set.next().algorithm(), SigningAlgorithm::EdDsa);
        set.rotate(&dir, T0 + DAY * 2, HOUR).unwrap();
        assert_eq!(set.current().algorithm(), SigningAlgorithm::EdDsa);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_key_file_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_tmp, dir, set) = new_set(SigningAlgorithm::Es256);
        let path = key_path(&dir, set.current().kid());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).unwrap_err();
        assert!(matches!(err, KeyError::InsecureKeyFile(_, 0o644)), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_world_writable_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_tmp, dir, _set) = new_set(SigningAlgorithm::Es256);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).unwrap_err();
        assert!(matches!(err, KeyError::InsecureDirectory(..)), "{err}");
    }

    #[test]
    fn refuses_swapped_key_file() {
        let (_tmp, dir, set) = new_set(SigningAlgorithm::Es256);
        let current = key_path(&dir, set.current().kid());
        let next = key_path(&dir, set.next().kid());
        let next_pem = fs::read(&next).unwrap();
        fs::remove_file(&current).unwrap();
        write_new_file(&current, &next_pem).unwrap();
        let err = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }

    #[test]
    fn refuses_tampered_metadata() {
        let (_tmp, dir, set) = new_set(SigningAlgorithm::Es256);
        let path = dir.join(METADATA_FILE);
        let original = fs::read_to_string(&path).unwrap();
        let kid = set.current().kid();
        for tampered in [
            original.replace(kid, "../../etc/passw"),
            original.replace("\"next\"", "\"current\""),
            original.replace("\"ES256\"", "\"HS256\""),
            original.replace("\"version\": 1", "\"version\": 2"),
            "[]".to_owned(),
        ] {
            fs::write(&path, tampered).unwrap();
            assert!(KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).is_err());
        }
        // Algorithm recorded for a key file of another type.
        fs::write(&path, original.replace("\"ES256\"", "\"EdDSA\"")).unwrap();
        assert!(KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).is_err());
    }

    #[test]
    fn refuses_orphan_key_files_without_metadata() {
        let (_tmp, dir, _set) = new_set(SigningAlgorithm::Es256);
        fs::remove_file(dir.join(METADATA_FILE)).unwrap();
        let err = KeySet::load_or_create(&dir, SigningAlgorithm::Es256, T0).unwrap_err();
        assert!(matches!(err, KeyError::Incomplete(_)), "{err}");
    }

    #[test]
    fn huge_retention_is_an_error_not_a_panic() {
        let (_tmp, dir, mut set) = new_set(SigningAlgorithm::EdDsa);
        let before = set.current().kid().to_owned();
        let err = set.rotate(&dir, T0, Duration::MAX).unwrap_err();
        assert!(matches!(err, KeyError::DurationOutOfRange(_)));
        assert_eq!(set.current().kid(), before);
        assert!(!set.rotation_due(T0 + DAY * 365, Duration::MAX));
    }

    #[test]
    fn pem_round_trip_and_strictness() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = String::from_utf8(encode_pem(&der)).unwrap();
        assert_eq!(decode_pem(&pem).unwrap(), der);
        assert!(decode_pem(&pem.replace("PRIVATE KEY", "RSA PRIVATE KEY")).is_none());
        assert!(decode_pem(&format!("junk{pem}")).is_none());
        assert!(decode_pem("").is_none());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let (_tmp, _dir, set) = new_set(SigningAlgorithm::Es256);
        let debug = format!("{set:?}");
        assert!(debug.contains(set.current().kid()));
        assert!(!debug.contains("material"));
    }
}
