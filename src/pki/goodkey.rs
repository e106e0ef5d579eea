//! Public-key policy ("goodkey") for keys taken from PKCS#10 CSRs.
//!
//! The caller parses the SubjectPublicKeyInfo and hands over the raw key
//! material; [`KeyPolicy::check`] then decides whether the key is acceptable
//! for a certificate. The rules follow the CA/Browser Forum Baseline
//! Requirements §6.1.5/§6.1.6 and the usual weak-key checks performed by
//! public CAs (small factors, ROCA, Fermat, blocklist), plus full public-key
//! validation for the EC and Ed25519 cases.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::One;

/// What the caller parsed out of the SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug)]
pub enum PublicKeyMaterial<'a> {
    /// RSA public key. `modulus` and `exponent` are the contents of the DER
    /// INTEGERs of the RSAPublicKey structure (big-endian two's complement, so
    /// a leading 0x00 is present when the top bit of the magnitude is set).
    Rsa {
        modulus: &'a [u8],
        exponent: &'a [u8],
    },
    /// ECDSA public key: the SEC1-encoded point as found in the SPKI bit string.
    Ec { curve: EcCurve, point: &'a [u8] },
    /// Ed25519 public key (RFC 8032 encoding).
    Ed25519 { key: &'a [u8] },
}

/// The elliptic curves this policy knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
}

impl fmt::Display for EcCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
        })
    }
}

/// Which keys are acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Smallest RSA modulus size accepted (only 2048, 3072, 4096 are ever accepted).
    pub rsa_min_bits: u32,
    pub allow_rsa: bool,
    pub allow_ecdsa_p256: bool,
    pub allow_ecdsa_p384: bool,
    pub allow_ed25519: bool,
    /// Number of Fermat factorisation rounds tried on RSA moduli (0 disables the check).
    pub fermat_rounds: u32,
    /// SHA-256 digests of DER SubjectPublicKeyInfos that are refused outright.
    pub blocked_spki_sha256: HashSet<[u8; 32]>,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            rsa_min_bits: 2048,
            allow_rsa: true,
            allow_ecdsa_p256: true,
            allow_ecdsa_p384: true,
            allow_ed25519: true,
            fermat_rounds: 100,
            blocked_spki_sha256: HashSet::new(),
        }
    }
}

/// Description of an accepted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyDescription {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyDescription {
    /// A short, fixed label (`ecdsa-p256`, `rsa-3072`, …) for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            KeyDescription::Rsa { bits: 2048 } => "rsa-2048",
            KeyDescription::Rsa { bits: 3072 } => "rsa-3072",
            KeyDescription::Rsa { bits: 4096 } => "rsa-4096",
            KeyDescription::Rsa { .. } => "rsa-other",
            KeyDescription::EcdsaP256 => "ecdsa-p256",
            KeyDescription::EcdsaP384 => "ecdsa-p384",
            KeyDescription::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDescription::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyDescription::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyDescription::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyDescription::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// Why a key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakKey {
    #[error("{key_type} keys are disabled by policy")]
    Disabled { key_type: &'static str },
    #[error("public key is blocklisted (SPKI SHA-256 {spki_sha256})")]
    Blocklisted { spki_sha256: String },

    #[error("RSA modulus must be a positive integer")]
    RsaModulusNotPositive,
    #[error("RSA modulus is {bits} bits; allowed sizes are {allowed} bits")]
    RsaModulusSize { bits: u32, allowed: String },
    #[error("RSA modulus is even")]
    RsaModulusEven,
    #[error("RSA public exponent {exponent} is not allowed; it must be e=65537")]
    RsaExponent { exponent: String },
    #[error("RSA modulus is divisible by the small prime {factor}")]
    RsaSmallFactor { factor: u32 },
    #[error(
        "RSA modulus has the ROCA fingerprint (CVE-2017-15361, Infineon RSALib): it can be factored"
    )]
    RsaRoca,
    #[error(
        "RSA modulus was factored by Fermat's method in {rounds} round(s): its prime factors are too close together"
    )]
    RsaFermat { rounds: u32 },

    #[error(
        "ECDSA {curve} public key is a compressed point; only uncompressed points (0x04 || X || Y) are accepted"
    )]
    EcPointCompressed { curve: EcCurve },
    #[error("ECDSA {curve} public key is the point at infinity")]
    EcPointAtInfinity { curve: EcCurve },
    #[error(
        "ECDSA {curve} public key has an invalid point encoding (leading byte {tag:#04x}, expected 0x04)"
    )]
    EcPointEncoding { curve: EcCurve, tag: u8 },
    #[error("ECDSA {curve} uncompressed public key must be {expected} bytes, got {actual}")]
    EcPointLength {
        curve: EcCurve,
        expected: usize,
        actual: usize,
    },
    #[error("ECDSA {curve} public key has a coordinate not less than the field prime p")]
    EcCoordinateOutOfRange { curve: EcCurve },
    #[error("ECDSA {curve} public key point is not on the curve")]
    EcPointNotOnCurve { curve: EcCurve },

    #[error("Ed25519 public key must be exactly 32 bytes, got {actual}")]
    Ed25519Length { actual: usize },
    #[error("Ed25519 public key is all zeros")]
    Ed25519AllZero,
    #[error("Ed25519 public key is a small-order point")]
    Ed25519SmallOrder,
    #[error("Ed25519 public key is not a valid point encoding (RFC 8032 §5.1.3)")]
    Ed25519InvalidEncoding,
}

impl KeyPolicy {
    /// Checks `key` against the policy.
    ///
    /// `spki_sha256`: SHA-256 of the full DER SubjectPublicKeyInfo (computed
    /// by the caller) for the blocklist check.
    pub fn check(
        &self,
        key: &PublicKeyMaterial<'_>,
        spki_sha256: &[u8; 32],
    ) -> Result<KeyDescription, WeakKey> {
        // Policy switches first: a disabled type is refused whatever it looks like.
        let (allowed, key_type) = match key {
            PublicKeyMaterial::Rsa { .. } => (self.allow_rsa, "RSA"),
            PublicKeyMaterial::Ec {
                curve: EcCurve::P256,
                ..
            } => (self.allow_ecdsa_p256, "ECDSA P-256"),
            PublicKeyMaterial::Ec {
                curve: EcCurve::P384,
                ..
            } => (self.allow_ecdsa_p384, "ECDSA P-384"),
            PublicKeyMaterial::Ed25519 { .. } => (self.allow_ed25519, "Ed25519"),
        };
        if !allowed {
            return Err(WeakKey::Disabled { key_type });
        }

        // Operator blocklist of compromised or industry-demonstrated weak keys
        // (e.g. Debian weak keys): CA/B BR §6.1.1.3.
        if self.blocked_spki_sha256.contains(spki_sha256) {
            return Err(WeakKey::Blocklisted {
                spki_sha256: hex::encode(spki_sha256),
            });
        }

        match *key {
            PublicKeyMaterial::Rsa { modulus, exponent } => self
                .check_rsa(modulus, exponent)
                .map(|bits| KeyDescription::Rsa { bits }),
            PublicKeyMaterial::Ec { curve, point } => {
                check_ec_point(curve, point)?;
                Ok(match curve {
                    EcCurve::P256 => KeyDescription::EcdsaP256,
                    EcCurve::P384 => KeyDescription::EcdsaP384,
                })
            }
            PublicKeyMaterial::Ed25519 { key } => {
                check_ed25519(key)?;
                Ok(KeyDescription::Ed25519)
            }
        }
    }

    fn check_rsa(&self, modulus: &[u8], exponent: &[u8]) -> Result<u32, WeakKey> {
        // The modulus is a positive INTEGER: RFC 8017 §A.1.1, CA/B BR §6.1.6.
        let n_bytes = match der_unsigned(modulus) {
            Some(m) if !m.is_empty() => m,
            _ => return Err(WeakKey::RsaModulusNotPositive),
        };
        let bits = bit_length(n_bytes);

        // Modulus size: CA/B BR §6.1.5 (≥ 2048 bits, divisible by 8), restricted
        // further, as Let's Encrypt does, to exactly 2048, 3072 or 4096 bits.
        if !RSA_SIZES.contains(&bits) || bits < self.rsa_min_bits {
            return Err(WeakKey::RsaModulusSize {
                bits,
                allowed: self.allowed_rsa_sizes(),
            });
        }

        // The modulus of a product of two odd primes is odd: CA/B BR §6.1.6.
        if n_bytes.last().is_none_or(|b| b & 1 == 0) {
            return Err(WeakKey::RsaModulusEven);
        }

        // Public exponent: CA/B BR §6.1.6 (odd, ≥ 3, SHOULD be in [2^16+1, 2^256−1]);
        // as Let's Encrypt does, we accept exactly e = 65537 only.
        let e_ok = der_unsigned(exponent).is_some_and(|e| e == [0x01, 0x00, 0x01]);
        if !e_ok {
            return Err(WeakKey::RsaExponent {
                exponent: describe_integer(exponent),
            });
        }

        // No factor among the first 10,000 primes: CA/B BR §6.1.6 ("no factors
        // smaller than 752"), extended as in NIST SP 800-89 §5.3.3.
        let n = BigUint::from_bytes_be(n_bytes);
        let words = be_words(n_bytes);
        if let Some(factor) = smallest_small_factor(&n, &words) {
            return Err(WeakKey::RsaSmallFactor { factor });
        }

        // ROCA: Nemec et al., "The Return of Coppersmith's Attack", CCS 2017.
        if has_roca_fingerprint(&words) {
            return Err(WeakKey::RsaRoca);
        }

        // Fermat factorisation of close primes: CVE-2022-26320 (Böck, 2022),
        // cf. NIST FIPS 186-4 §B.3.1 (|p − q| > 2^(nlen/2 − 100)).
        if self.fermat_rounds > 0
            && let Some(rounds) = fermat_factor(&n, self.fermat_rounds)
        {
            return Err(WeakKey::RsaFermat { rounds });
        }

        Ok(bits)
    }

    fn allowed_rsa_sizes(&self) -> String {
        let sizes: Vec<String> = RSA_SIZES
            .iter()
            .filter(|&&s| s >= self.rsa_min_bits)
            .map(u32::to_string)
            .collect();
        match sizes.as_slice() {
            [] => "none".to_owned(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    }
}

/// RSA modulus sizes ever accepted (CA/B BR §6.1.5 floor; Let's Encrypt's set).
const RSA_SIZES: [u32; 3] = [2048, 3072, 4096];

/// Magnitude of a DER INTEGER content (big-endian two's complement) with the
/// leading zero bytes removed; `None` if the integer is negative.
fn der_unsigned(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..)
}

/// Number of significant bits of a big-endian magnitude without leading zeros.
fn bit_length(mag: &[u8]) -> u32 {
    match mag.first() {
        None => 0,
        Some(&top) => {
            let len = u32::try_from(mag.len()).unwrap_or(u32::MAX / 8);
            (len - 1) * 8 + (8 - top.leading_zeros())
        }
    }
}

/// Human-readable form of an exponent for the error message.
fn describe_integer(bytes: &[u8]) -> String {
    let Some(mag) = der_unsigned(bytes) else {
        return "(a negative integer)".to_owned();
    };
    if mag.len() <= 8 {
        let v = mag.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        format!("e={v}")
    } else {
        format!("(a {}-bit integer)", bit_length(mag))
    }
}

/// Big-endian bytes → big-endian u32 words (the first word may be partial).
fn be_words(mag: &[u8]) -> Vec<u32> {
    let head = mag.len() % 4;
    let (first, rest) = mag.split_at(head);
    let mut words = Vec::with_capacity(mag.len() / 4 + 1);
    if !first.is_empty() {
        words.push(first.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)));
    }
    words.extend(
        rest.chunks_exact(4)
            .map(|c| c.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))),
    );
    words
}

/// `n mod m` for `n` given as big-endian u32 words and `m > 0`.
fn mod_small(words: &[u32], m: u32) -> u32 {
    let m = u64::from(m);
    let r = words
        .iter()
        .fold(0u64, |rem, &w| ((rem << 32) | u64::from(w)) % m);
    // r < m ≤ u32::MAX
    u32::try_from(r).unwrap_or(0)
}

/// Number of small primes whose divisibility is checked.
const SMALL_PRIME_COUNT: usize = 10_000;
/// The 10,000th prime is 104,729, so a sieve up to this bound finds them all.
const SIEVE_LIMIT: usize = 104_730;

/// The first 10,000 primes (2, 3, 5, …, 104729), sieved on first use.
fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let mut composite = vec![false; SIEVE_LIMIT + 1];
        let mut primes = Vec::with_capacity(SMALL_PRIME_COUNT);
        for i in 2..=SIEVE_LIMIT {
            if composite.get(i).copied().unwrap_or(true) {
                continue;
            }
            if let Ok(p) = u32::try_from(i) {
                primes.push(p);
            }
            if primes.len() == SMALL_PRIME_COUNT {
                break;
            }
            for slot in composite.iter_mut().skip(i * i).step_by(i) {
                *slot = true;
            }
        }
        primes
    })
}

/// Product of the first 10,000 primes (≈ 156,000 bits), computed on first use.
fn small_primes_product() -> &'static BigUint {
    static PRODUCT: OnceLock<BigUint> = OnceLock::new();
    PRODUCT.get_or_init(|| {
        // Multiply in u64-sized batches (the primes are < 2^17, so three fit).
        let mut product = BigUint::one();
        let mut batch = 1u64;
        for &p in small_primes() {
            match batch.checked_mul(u64::from(p)) {
                Some(b) => batch = b,
                None => {
                    product *= batch;
                    batch = u64::from(p);
                }
            }
        }
        product * batch
    })
}

/// Smallest prime among the first 10,000 that divides `n`, if any.
/// One gcd with the product of all of them settles the common case (no
/// factor); the per-prime scan only runs when there is one.
fn smallest_small_factor(n: &BigUint, words: &[u32]) -> Option<u32> {
    let g = (small_primes_product() % n).gcd(n);
    if g.is_one() {
        return None;
    }
    small_primes()
        .iter()
        .copied()
        .find(|&p| mod_small(words, p) == 0)
}

/// Odd primes used by the ROCA fingerprint. Infineon RSALib primes have the
/// form p = k·M + (65537^a mod M) with M the product of the first 39, 71, 126
/// or 225 primes depending on the key size (Nemec et al., CCS 2017);
/// every such M is a multiple of the primorial of the first 39 primes
/// (2 … 167), so for every such prime r, p mod r and hence n mod r lies in
/// the subgroup of (Z/rZ)* generated by 65537. The published detector tests
/// exactly these primes; r = 2 is trivially satisfied by odd moduli.
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// ROCA: Nemec et al., CCS 2017 — n is flagged iff for every detector prime r,
/// n mod r lies in ⟨65537⟩ ⊂ (Z/rZ)*. A random modulus passes this test with
/// negligible probability (the paper estimates ≈ 2^-154).
fn has_roca_fingerprint(words: &[u32]) -> bool {
    ROCA_PRIMES.iter().all(|&r| {
        let residue = mod_small(words, r);
        in_subgroup_65537(residue, r)
    })
}

/// Whether `x` lies in the multiplicative subgroup generated by 65537 mod `r`.
fn in_subgroup_65537(x: u32, r: u32) -> bool {
    let r = u64::from(r);
    let g = 65_537 % r;
    let x = u64::from(x);
    let mut power = 1 % r;
    // The order of g divides r − 1, so at most r − 1 steps.
    for _ in 0..r {
        if power == x {
            return true;
        }
        power = power * g % r;
        if power == 1 % r {
            break;
        }
    }
    false
}

/// Fermat's factorisation method: tries a = ⌈√n⌉, ⌈√n⌉+1, … for `rounds`
/// values and reports the round in which a² − n is a perfect square b² giving
/// a non-trivial factorisation n = (a − b)(a + b).
fn fermat_factor(n: &BigUint, rounds: u32) -> Option<u32> {
    let mut a = n.sqrt();
    if &a * &a < *n {
        a += 1u32;
    }
    let mut b2 = &a * &a - n;
    for round in 1..=rounds {
        if let Some(b) = exact_sqrt(&b2)
            && &a - &b > BigUint::one()
        {
            return Some(round);
        }
        // (a + 1)² − n = a² − n + 2a + 1
        b2 += &a << 1u32;
        b2 += 1u32;
        a += 1u32;
    }
    None
}

/// √x if x is a perfect square.
fn exact_sqrt(x: &BigUint) -> Option<BigUint> {
    // Squares are ≡ 0, 1, 4 or 9 (mod 16): cheap filter before the real root.
    let low = x.iter_u64_digits().next().unwrap_or(0) & 15;
    if !matches!(low, 0 | 1 | 4 | 9) {
        return None;
    }
    let root = x.sqrt();
    (&root * &root == *x).then_some(root)
}

struct CurveParams {
    p: BigUint,
    b: BigUint,
    coord_len: usize,
}

/// Curve constants from SEC 2 v2 §2.4.2 / §2.5.1 (= FIPS 186-4 §D.1.2.3 / §D.1.2.4).
fn curve_params(curve: EcCurve) -> &'static CurveParams {
    static P256: OnceLock<CurveParams> = OnceLock::new();
    static P384: OnceLock<CurveParams> = OnceLock::new();
    let hex_int = |s: &str| BigUint::parse_bytes(s.as_bytes(), 16).unwrap_or_default();
    match curve {
        EcCurve::P256 => P256.get_or_init(|| CurveParams {
            p: hex_int("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff"),
            b: hex_int("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b"),
            coord_len: 32,
        }),
        EcCurve::P384 => P384.get_or_init(|| CurveParams {
            p: hex_int(
                "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
            ),
            b: hex_int(
                "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
            ),
            coord_len: 48,
        }),
    }
}

/// Full public-key validation: NIST SP 800-56A Rev. 3 §5.6.2.3.3.
fn check_ec_point(curve: EcCurve, point: &[u8]) -> Result<(), WeakKey> {
    let params = curve_params(curve);
    let expected = 1 + 2 * params.coord_len;
    let Some((&tag, coords)) = point.split_first() else {
        return Err(WeakKey::EcPointLength {
            curve,
            expected,
            actual: 0,
        });
    };
    // Point encodings: SEC 1 v2 §2.3.3. 0x00 is the point at infinity, which
    // §5.6.2.3.3 step 1 refuses.
    match tag {
        0x04 => {}
        0x00 => return Err(WeakKey::EcPointAtInfinity { curve }),
        // Compressed points (0x02/0x03) are optional in RFC 5480 §2.2 and
        // refused here (uncompressed only, as Let's Encrypt does); the hybrid
        // form (0x06/0x07) MUST NOT be used (RFC 5480 §2.2).
        0x02 | 0x03 => return Err(WeakKey::EcPointCompressed { curve }),
        _ => return Err(WeakKey::EcPointEncoding { curve, tag }),
    }
    if point.len() != expected {
        return Err(WeakKey::EcPointLength {
            curve,
            expected,
            actual: point.len(),
        });
    }
    let (x_bytes, y_bytes) = coords.split_at(params.coord_len);
    // (0, 0) is the conventional affine stand-in for the point at infinity:
    // SP 800-56A §5.6.2.3.3 step 1.
    if coords.iter().all(|&b| b == 0) {
        return Err(WeakKey::EcPointAtInfinity { curve });
    }
    let x = BigUint::from_bytes_be(x_bytes);
    let y = BigUint::from_bytes_be(y_bytes);
    let p = &params.p;
    // SP 800-56A §5.6.2.3.3 step 2: 0 ≤ x, y ≤ p − 1.
    if x >= *p || y >= *p {
        return Err(WeakKey::EcCoordinateOutOfRange { curve });
    }
    // SP 800-56A §5.6.2.3.3 step 3: y² = x³ + a·x + b (mod p), with a = −3 (SEC 2).
    let lhs = &y * &y % p;
    let x3 = &x * &x % p * &x % p;
    let rhs = (x3 + p * 3u32 - &x * 3u32 + &params.b) % p;
    if lhs != rhs {
        return Err(WeakKey::EcPointNotOnCurve { curve });
    }
    // SP 800-56A §5.6.2.3.3 step 4 (n·Q = O) holds automatically: both curves
    // have prime order (cofactor h = 1, SEC 2 §2.4.2/§2.5.1).
    Ok(())
}

/// Encodings of the eight points of small order (dividing 8) on edwards25519,
/// plus their non-canonical variants (y ≥ p, or x = 0 with the sign bit set).
/// See RFC 7748 §7 and Brendel et al., "Taming the many EdDSAs" (SSR 2020).
const ED25519_SMALL_ORDER: [&str; 14] = [
    // order 1: the identity (0, 1)
    "0100000000000000000000000000000000000000000000000000000000000000",
    // order 2: (0, −1)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    // order 4: (±√−1, 0)
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    // order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    // non-canonical: x = 0 with the sign bit set (identity, order 2)
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    // non-canonical: y = p (≡ 0), either sign
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    // non-canonical: y = p + 1 (≡ 1), either sign
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
];

fn ed25519_small_order_set() -> &'static [[u8; 32]] {
    static SET: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    SET.get_or_init(|| {
        ED25519_SMALL_ORDER
            .iter()
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|v| <[u8; 32]>::try_from(v).ok())
            .collect()
    })
}

/// Ed25519 key validation: length (RFC 8032 §5.1.5), small-order points
/// (RFC 7748 §7; libsodium's blocklist), decoding (RFC 8032 §5.1.3).
fn check_ed25519(key: &[u8]) -> Result<(), WeakKey> {
    let Ok(bytes) = <[u8; 32]>::try_from(key) else {
        return Err(WeakKey::Ed25519Length { actual: key.len() });
    };
    if bytes.iter().all(|&b| b == 0) {
        return Err(WeakKey::Ed25519AllZero);
    }
    if ed25519_small_order_set().contains(&bytes) {
        return Err(WeakKey::Ed25519SmallOrder);
    }
    let Some(point) = ed25519::decode(&bytes) else {
        return Err(WeakKey::Ed25519InvalidEncoding);
    };
    // Belt and braces for the list above: [8]P must not be the identity.
    if ed25519::has_small_order(&point) {
        return Err(WeakKey::Ed25519SmallOrder);
    }
    Ok(())
}

/// Minimal affine arithmetic on edwards25519 (−x² + y² = 1 + d·x²·y² over
/// GF(2^255 − 19), RFC 8032 §5.1), only used for key validation.
mod ed25519 {
    use std::sync::OnceLock;

    use num_bigint::BigUint;
    use num_traits::{One, Zero};

    pub(super) struct Point {
        pub(super) x: BigUint,
        pub(super) y: BigUint,
    }

    struct Field {
        p: BigUint,
        d: BigUint,
        sqrt_m1: BigUint,
    }

    fn field() -> &'static Field {
        static F: OnceLock<Field> = OnceLock::new();
        F.get_or_init(|| {
            let p = (BigUint::one() << 255u32) - 19u32;
            // d = −121665 / 121666 (RFC 8032 §5.1)
            let inv = BigUint::from(121_666u32).modpow(&(&p - 2u32), &p);
            let d = (&p - 121_665u32) * inv % &p;
            // √−1 = 2^((p − 1) / 4)
            let sqrt_m1 = BigUint::from(2u32).modpow(&((&p - 1u32) >> 2u32), &p);
            Field { p, d, sqrt_m1 }
        })
    }

    fn inv(a: &BigUint, p: &BigUint) -> BigUint {
        a.modpow(&(p - 2u32), p)
    }

    /// RFC 8032 §5.1.3 point decoding (strict: y < p, no "−0").
    pub(super) fn decode(bytes: &[u8; 32]) -> Option<Point> {
        let Field { p, d, sqrt_m1 } = field();
        let mut le = *bytes;
        let sign = le.last().is_some_and(|b| b & 0x80 != 0);
        if let Some(last) = le.last_mut() {
            *last &= 0x7f;
        }
        let y = BigUint::from_bytes_le(&le);
        if y >= *p {
            return None;
        }
        let y2 = &y * &y % p;
        let u = (&y2 + p - 1u32) % p;
        let v = (d * &y2 + 1u32) % p;
        let v3 = &v * &v % p * &v % p;
        let v7 = &v3 * &v3 % p * &v % p;
        let exp = (p - 5u32) >> 3u32;
        let mut x = &u * &v3 % p * (&u * &v7 % p).modpow(&exp, p) % p;
        let vx2 = &v * &x % p * &x % p;
        if vx2 == u {
            // x is a root
        } else if vx2 == (p - &u) % p {
            x = x * sqrt_m1 % p;
        } else {
            return None;
        }
        if x.is_zero() && sign {
            return None;
        }
        if x.bit(0) != sign {
            x = p - x;
        }
        Some(Point { x, y })
    }

    fn double(pt: &Point) -> Point {
        let Field { p, d, .. } = field();
        let xx = &pt.x * &pt.x % p;
        let yy = &pt.y * &pt.y % p;
        let xy = &pt.x * &pt.y % p;
        let dxxyy = d * &xx % p * &yy % p;
        // Unified (complete) addition law with a = −1, P1 = P2:
        // x3 = 2xy / (1 + d·x²·y²), y3 = (y² + x²) / (1 − d·x²·y²)
        let x3 = (&xy << 1u32) % p * inv(&((BigUint::one() + &dxxyy) % p), p) % p;
        let y3 = (&yy + &xx) % p * inv(&((BigUint::one() + p - &dxxyy) % p), p) % p;
        Point { x: x3, y: y3 }
    }

    /// Whether [8]P is the identity (0, 1).
    pub(super) fn has_small_order(pt: &Point) -> bool {
        let p8 = double(&double(&double(pt)));
        p8.x.is_zero() && p8.y.is_one()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use num_traits::Zero;

    // ---------------------------------------------------------------------
    // Helpers: deterministic PRNG, Miller–Rabin, RSA material builders.
    // ---------------------------------------------------------------------

    /// SplitMix64, good enough to make "random-looking" test numbers.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Random integer of exactly `bits` bits with the top two bits set.
        fn top2(&mut self, bits: u64) -> BigUint {
            let words: Vec<u64> = (0..bits.div_ceil(64)).map(|_| self.next_u64()).collect();
            let mut x = BigUint::from_slice(
                &words
                    .iter()
                    .flat_map(|w| [*w as u32, (*w >> 32) as u32])
                    .collect::<Vec<_>>(),
            );
            x %= BigUint::one() << bits;
            x |= BigUint::from(3u32) << (bits - 2);
            x
        }
    }

    fn is_probable_prime(n: &BigUint) -> bool {
        let two = BigUint::from(2u32);
        if *n < two {
            return false;
        }
        for &p in &small_primes()[..200] {
            let p = BigUint::from(p);
            if *n == p {
                return true;
            }
            if (n % &p).is_zero() {
                return false;
            }
        }
        let n1 = n - 1u32;
        let s = n1.trailing_zeros().unwrap();
        let d = &n1 >> s;
        'witness: for a in [2u32, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
            let mut x = BigUint::from(a).modpow(&d, n);
            if x.is_one() || x == n1 {
                continue;
            }
            for _ in 1..s {
                x = &x * &x % n;
                if x == n1 {
                    continue 'witness;
                }
            }
            return false;
        }
        true
    }

    fn next_prime(mut x: BigUint) -> BigUint {
        if !x.bit(0) {
            x += 1u32;
        }
        while !is_probable_prime(&x) {
            x += 2u32;
        }
        x
    }

    fn be(n: &BigUint) -> Vec<u8> {
        // DER INTEGER content: leading 0x00 when the top bit is set.
        let mut v = n.to_bytes_be();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        v
    }

    const E65537: &[u8] = &[0x01, 0x00, 0x01];
    const NO_HASH: [u8; 32] = [0u8; 32];

    fn check_rsa_with(
        policy: &KeyPolicy,
        n: &BigUint,
        e: &[u8],
    ) -> Result<KeyDescription, WeakKey> {
        let m = be(n);
        policy.check(
            &PublicKeyMaterial::Rsa {
                modulus: &m,
                exponent: e,
            },
            &NO_HASH,
        )
    }

    fn check_rsa(n: &BigUint) -> Result<KeyDescription, WeakKey> {
        check_rsa_with(&KeyPolicy::default(), n, E65537)
    }

    fn hex_int(s: &str) -> BigUint {
        BigUint::parse_bytes(s.trim().as_bytes(), 16).unwrap()
    }

    /// `openssl genrsa 2048` (private key discarded).
    const GOOD_RSA_2048: &str = "b96135f60b494a9ca821cc5b741d48c93df19a7e5689786be7a7494309b13e499036991ff2989f56abc5c026a644165da4e3b4040c54fe4b14dcddd808ee41e236b3f30fcfdae68ebe91ba401a16b26255b016771f36c88c0948e52a9ce944e24f5df3ae534c7563ab3f7c30d930804abb6e8605e80ea4cfc7082a6ef07385252c4eb3970910609c3186c1738ae72aadee45be78072def4308521f87c4186561cf2b1ac098d6412216f03437f38ef0b75c70dce05539ceaa136c081f74583afee3174826aac57c290f1341a6ff09aa6164d6ed511a650324276561c0642748ab7b04f0c2c60951e957ecf099c479166685d5bafe8d19e76daa0f321236400f85";
    /// `openssl genrsa 3072` (private key discarded).
    const GOOD_RSA_3072: &str = "d2cfe9d68744b2bf6f5dedfe88e0f861c75c63b641b38fd7b9c5604ba4dbd930b5693864470a87e5131737fae39e5fe8fca6190187291b7f2f2c2aa08327a1ea8ee16a6eaab67d97fb70ee8e20f1aaf83a2c4cc25666aeda5d801aa09c726c85327f584ec35aeed9a1ad4b3b6734f674bd535c3890831952989f7b8e0776ecea8c6fa615016e37126adcc0c6fa47e3c3fdd483e81dd980d07148805a32fefc9770c489382c6732c2d642988cb498edf362c3c0ce4ae71bdd56de943e26e954026f066ca6235b2da1aa599d98f126404d84eb2cd0891a6207f87ea2afc82e14bd15a79bf6dde519759b235764f10f1ab8b62695aee61f72cfe7fac70d4557c30a9e308b23a66334ef467ca13e348d7d13e1e31fc7f43201d7342e62f4c77452f10c94865357449f65218a9ef37a0103fecea07c3c97b96e7dcb64e84a1268d0169d2f9beca432d25e6d08e1f48ac9d449360033176653dba88e39077b384a196568bd1410189aa2c140ba6339b64d135dbee4b3f2fba91e35256106b55f737cb3";
    /// `openssl genrsa 4096` (private key discarded).
    const GOOD_RSA_4096: &str = "d70fd7c9455de10ae19a90cef50fe7f7e0b06c170fc3529d7241c32af6064433b9dde7f457b0a308e166b499fbbc32455e78f67a96f394e4fa1d0f117237f70839c96eca3a7881ca01dc733dc53fa47f85ad7c604926b1cd66e690db060e9a6353a70c4e98021c5362a898678cf8e9f815f7e89cdaeaf3950cf204d9b814f374e737a3aa4253765f203948bd616ccc97ba89503bcdf2474e8169c1ab2b65824a8855713d7a9493a7d19404bb495c8b97dd909d49dc2931f9d1206d6a64f7007bc609646c9bdd5905ab9298bc782a7f54cdd25ec9af80902b42c11e6d0ab8797ab011dcb18138556467f212898c404836815e468ab403fd3ddcc8ec44308dbefb519e23454ffb42ed9cf6e1a65f31a3c55b6364478571f3c94ccda8681c87b23ff6ee42213c9efb195c3ef6586c81539a33063c0605326da887c5c8bba8cf615997021772cff1940f5f8350c2f6d2dcdf296336f2d803ca272887bbaeb8323e0ae310a3f2e19c287a5f3a587ba7765190ef6a6fab010713427ef963e11d5b74da8932dc6bc14d519b9d0653915e0791b46120869e8d47e9d7a6f8b589a37104c438e901a38dbd3c27be353e54e7765488760b86b3ef4c6827355db73aa47482027a8f259ee016c5e6f2a95dbe1faae0ff13b6669e855525e25f3e4cc52d8878b04d660968f0de7859ba9739310fe2e3aa5ef1277e8c99972a23a8aeb16ce3c455";
    /// Uncompressed points of `openssl ecparam -genkey` keys.
    const GOOD_P256: &str = "041114e5a95edf3f627b1b3934c5d2cbce806e0aef8cdf4e6a3d39b2d56415b9f1a60018cbcd5158637e6676492e184a62eb0f99226ab165a430167e59b82b2d93";
    const GOOD_P384: &str = "041796395ee406d858254e07bc4a1699406e218238db34e562f09bb6cc8c17f4a3aa610b1cf92b9d1f4dd06458aa9e5c8cb10da8d3db28921defeacc9dfbfa5cbc73ad65fa02f8499ba2e00f7b09c0530e6fd0cc64b7f3a5b6cd16b403f67de23d";
    /// Curve generators G from SEC 2 (known to be on the curve).
    const P256_G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
    const P384_G: &str = "04aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab73617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f";
    /// RFC 8032 §7.1 TEST 1 public key.
    const GOOD_ED25519: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    // ---------------------------------------------------------------------
    // RSA
    // ---------------------------------------------------------------------

    #[test]
    fn rsa_known_good_keys_pass() {
        assert_eq!(
            check_rsa(&hex_int(GOOD_RSA_2048)),
            Ok(KeyDescription::Rsa { bits: 2048 })
        );
        assert_eq!(
            check_rsa(&hex_int(GOOD_RSA_3072)),
            Ok(KeyDescription::Rsa { bits: 3072 })
        );
        assert_eq!(
            check_rsa(&hex_int(GOOD_RSA_4096)),
            Ok(KeyDescription::Rsa { bits: 4096 })
        );
        assert_eq!(KeyDescription::Rsa { bits: 2048 }.to_string(), "RSA-2048");
    }

    #[test]
    fn rsa_modulus_with_and_without_leading_zero() {
        let n = hex_int(GOOD_RSA_2048);
        let with_zero = be(&n);
        assert_eq!(with_zero[0], 0);
        let ok = KeyPolicy::default().check(
            &PublicKeyMaterial::Rsa {
                modulus: &with_zero,
                exponent: &[0x00, 0x01, 0x00, 0x01],
            },
            &NO_HASH,
        );
        assert_eq!(ok, Ok(KeyDescription::Rsa { bits: 2048 }));
        // Without the 0x00 the DER INTEGER is negative.
        let neg = KeyPolicy::default().check(
            &PublicKeyMaterial::Rsa {
                modulus: &with_zero[1..],
                exponent: E65537,
            },
            &NO_HASH,
        );
        assert_eq!(neg, Err(WeakKey::RsaModulusNotPositive));
    }

    #[test]
    fn rsa_modulus_zero_or_empty_refused() {
        for m in [&[][..], &[0u8][..], &[0u8; 256][..]] {
            let r = KeyPolicy::default().check(
                &PublicKeyMaterial::Rsa {
                    modulus: m,
                    exponent: E65537,
                },
                &NO_HASH,
            );
            assert_eq!(r, Err(WeakKey::RsaModulusNotPositive));
        }
    }

    #[test]
    fn rsa_sizes() {
        let mut rng = Rng(1);
        for bits in [512u64, 1024, 2047, 2049, 3071, 4095, 4097, 8192, 16384] {
            let n = rng.top2(bits) | BigUint::one();
            let err = check_rsa(&n).unwrap_err();
            assert_eq!(
                err,
                WeakKey::RsaModulusSize {
                    bits: bits as u32,
                    allowed: "2048, 3072 or 4096".into()
                }
            );
            assert_eq!(
                err.to_string(),
                format!("RSA modulus is {bits} bits; allowed sizes are 2048, 3072 or 4096 bits")
            );
        }
        // rsa_min_bits raises the floor.
        let policy = KeyPolicy {
            rsa_min_bits: 3072,
            ..KeyPolicy::default()
        };
        let err = check_rsa_with(&policy, &hex_int(GOOD_RSA_2048), E65537).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RSA modulus is 2048 bits; allowed sizes are 3072 or 4096 bits"
        );
        assert_eq!(
            check_rsa_with(&policy, &hex_int(GOOD_RSA_3072), E65537),
            Ok(KeyDescription::Rsa { bits: 3072 })
        );
        let policy = KeyPolicy {
            rsa_min_bits: 4096,
            ..KeyPolicy::default()
        };
        assert_eq!(policy.allowed_rsa_sizes(), "4096");
        let policy = KeyPolicy {
            rsa_min_bits: 8192,
            ..KeyPolicy::default()
        };
        assert_eq!(policy.allowed_rsa_sizes(), "none");
    }

    #[test]
    fn rsa_even_modulus_refused() {
        let n = hex_int(GOOD_RSA_2048) + 1u32;
        assert_eq!(check_rsa(&n), Err(WeakKey::RsaModulusEven));
    }

    #[test]
    fn rsa_exponents() {
        let n = hex_int(GOOD_RSA_2048);
        let big_e = {
            let mut v = vec![0x40u8; 512];
            v[511] = 0x01;
            v
        };
        let two32p1 = [0x01u8, 0x00, 0x00, 0x00, 0x01];
        let cases: Vec<(&[u8], &str)> = vec![
            (&[0x01], "e=1"),
            (&[0x03], "e=3"),
            (&[0x11], "e=17"),
            (&[0x01, 0x00, 0x00], "e=65536"),
            (&[0x01, 0x00, 0x02], "e=65538"),
            (&[0x01, 0x00, 0x03], "e=65539"),
            (&two32p1, "e=4294967297"),
            (&big_e, "(a 4095-bit integer)"),
            (&[0x81, 0x00, 0x01], "(a negative integer)"),
            (&[], "e=0"),
        ];
        for (e, shown) in cases {
            let err = check_rsa_with(&KeyPolicy::default(), &n, e).unwrap_err();
            assert_eq!(
                err,
                WeakKey::RsaExponent {
                    exponent: shown.into()
                }
            );
            assert!(err.to_string().contains("it must be e=65537"), "{err}");
        }
        // A 4096-bit exponent (top bit set, DER leading zero).
        let mut e4096 = vec![0u8, 0xff];
        e4096.extend(std::iter::repeat_n(0x01, 511));
        let err = check_rsa_with(&KeyPolicy::default(), &n, &e4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RSA public exponent (a 4096-bit integer) is not allowed; it must be e=65537"
        );
    }

    /// q prime such that `small * q` is exactly 2048 bits.
    fn composite_with_small_factor(small: u32, rng: &mut Rng) -> BigUint {
        let target = rng.top2(2048);
        let q = next_prime(target / small);
        let n = q * small;
        assert_eq!(n.bits(), 2048);
        n
    }

    #[test]
    fn rsa_small_factors_refused() {
        let mut rng = Rng(2);
        // 3 is the smallest odd prime, 7919 the 1,000th prime, 104729 the 10,000th.
        for small in [3u32, 7919, 104_729] {
            let n = composite_with_small_factor(small, &mut rng);
            let err = check_rsa(&n).unwrap_err();
            assert_eq!(err, WeakKey::RsaSmallFactor { factor: small });
            assert_eq!(
                err.to_string(),
                format!("RSA modulus is divisible by the small prime {small}")
            );
        }
        // 104743 is the 10,001st prime: outside the list, so this check passes
        // (and nothing else catches such a key).
        let n = composite_with_small_factor(104_743, &mut rng);
        assert_eq!(check_rsa(&n), Ok(KeyDescription::Rsa { bits: 2048 }));
    }

    #[test]
    fn small_prime_table() {
        let primes = small_primes();
        assert_eq!(primes.len(), 10_000);
        assert_eq!(&primes[..6], &[2, 3, 5, 7, 11, 13]);
        assert_eq!(primes[999], 7919);
        assert_eq!(primes[9999], 104_729);
        assert!(primes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            ROCA_PRIMES.to_vec(),
            primes
                .iter()
                .copied()
                .filter(|&p| p > 2 && p <= 167)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn mod_small_matches_bigint() {
        let mut rng = Rng(3);
        for bits in [8u64, 31, 33, 100, 2048] {
            let n = rng.top2(bits);
            let words = be_words(&n.to_bytes_be());
            for m in [2u32, 3, 167, 104_729, u32::MAX] {
                assert_eq!(BigUint::from(mod_small(&words, m)), &n % m);
            }
        }
    }

    /// Primorial of the ROCA detector primes 2 … 167.
    fn roca_m() -> BigUint {
        ROCA_PRIMES
            .iter()
            .fold(BigUint::from(2u32), |acc, &p| acc * p)
    }

    /// A prime of the Infineon RSALib form p = k·M + (65537^a mod M).
    fn roca_prime(bits: u64, rng: &mut Rng) -> BigUint {
        let m = roca_m();
        let a = BigUint::from(rng.next_u64());
        let c = BigUint::from(65_537u32).modpow(&a, &m);
        let mut k = rng.top2(bits) / &m;
        loop {
            let p = &k * &m + &c;
            if is_probable_prime(&p) {
                return p;
            }
            k += 1u32;
        }
    }

    #[test]
    fn rsa_roca_structured_modulus_refused() {
        let mut rng = Rng(4);
        let p = roca_prime(1024, &mut rng);
        let q = roca_prime(1024, &mut rng);
        let n = &p * &q;
        assert_eq!(n.bits(), 2048);
        let err = check_rsa(&n).unwrap_err();
        assert_eq!(err, WeakKey::RsaRoca);
        assert!(err.to_string().contains("ROCA"));
        // Only one ROCA-shaped factor is not enough.
        let q = next_prime(rng.top2(1024));
        assert_eq!(
            check_rsa(&(&p * &q)),
            Ok(KeyDescription::Rsa { bits: 2048 })
        );
    }

    #[test]
    fn roca_subgroup_membership() {
        // 65537 ≡ 2 (mod 5) generates all of (Z/5Z)*.
        assert!((1..5).all(|x| in_subgroup_65537(x, 5)));
        assert!(!in_subgroup_65537(0, 5));
        // 65537 = 2^16 + 1 ≡ 2 (mod 17), and 2 has order 8 mod 17:
        // the subgroup is {1, 2, 4, 8, 16, 15, 13, 9}.
        let sub: Vec<u32> = (1..17).filter(|&x| in_subgroup_65537(x, 17)).collect();
        assert_eq!(sub, vec![1, 2, 4, 8, 9, 13, 15, 16]);
    }

    #[test]
    fn rsa_close_primes_fermat_refused() {
        let mut rng = Rng(5);
        let p = next_prime(rng.top2(1024));
        let q = next_prime(&p + 1u32);
        let n = &p * &q;
        let err = check_rsa(&n).unwrap_err();
        assert_eq!(err, WeakKey::RsaFermat { rounds: 1 });
        assert!(err.to_string().contains("Fermat"));

        // Primes ~2^600 apart: a − ⌈√n⌉ ≈ (p − q)²/(8a) ≈ 2^174 rounds away.
        let q = next_prime(&p + (BigUint::one() << 600u32));
        assert_eq!(
            check_rsa(&(&p * &q)),
            Ok(KeyDescription::Rsa { bits: 2048 })
        );

        // fermat_rounds = 0 disables the check.
        let policy = KeyPolicy {
            fermat_rounds: 0,
            ..KeyPolicy::default()
        };
        let q = next_prime(&p + 1u32);
        assert_eq!(
            check_rsa_with(&policy, &(&p * &q), E65537),
            Ok(KeyDescription::Rsa { bits: 2048 })
        );
    }

    #[test]
    fn fermat_needs_several_rounds() {
        // p − q = 2δ with (p+q)/2 = a. Pick a gap so that a − ⌈√n⌉ is about 10:
        // a − √n ≈ δ²/(2a), so δ ≈ √(20a).
        let mut rng = Rng(6);
        let base = rng.top2(1024);
        let delta = (base.clone() * 20u32).sqrt();
        let p = next_prime(&base + &delta);
        let q = next_prime(&base - &delta);
        let n = &p * &q;
        match fermat_factor(&n, 100) {
            Some(r) => assert!((5..=20).contains(&r), "round {r}"),
            None => panic!("not factored"),
        }
        assert_eq!(fermat_factor(&n, 3), None);
    }

    #[test]
    fn blocklist() {
        let n = hex_int(GOOD_RSA_2048);
        let hash = [0xabu8; 32];
        let mut policy = KeyPolicy::default();
        assert!(check_rsa_with(&policy, &n, E65537).is_ok());
        policy.blocked_spki_sha256.insert(hash);
        let m = be(&n);
        let err = policy
            .check(
                &PublicKeyMaterial::Rsa {
                    modulus: &m,
                    exponent: E65537,
                },
                &hash,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "public key is blocklisted (SPKI SHA-256 {})",
                "ab".repeat(32)
            )
        );
        let p256 = hex::decode(GOOD_P256).unwrap();
        assert!(matches!(
            policy.check(
                &PublicKeyMaterial::Ec {
                    curve: EcCurve::P256,
                    point: &p256
                },
                &hash
            ),
            Err(WeakKey::Blocklisted { .. })
        ));
    }

    // ---------------------------------------------------------------------
    // Policy switches
    // ---------------------------------------------------------------------

    #[test]
    fn disabled_types() {
        let n = be(&hex_int(GOOD_RSA_2048));
        let p256 = hex::decode(GOOD_P256).unwrap();
        let p384 = hex::decode(GOOD_P384).unwrap();
        let ed = hex::decode(GOOD_ED25519).unwrap();
        let keys = [
            PublicKeyMaterial::Rsa {
                modulus: &n,
                exponent: E65537,
            },
            PublicKeyMaterial::Ec {
                curve: EcCurve::P256,
                point: &p256,
            },
            PublicKeyMaterial::Ec {
                curve: EcCurve::P384,
                point: &p384,
            },
            PublicKeyMaterial::Ed25519 { key: &ed },
        ];
        let names = ["RSA", "ECDSA P-256", "ECDSA P-384", "Ed25519"];
        let all_off = KeyPolicy {
            allow_rsa: false,
            allow_ecdsa_p256: false,
            allow_ecdsa_p384: false,
            allow_ed25519: false,
            ..KeyPolicy::default()
        };
        for (key, name) in keys.iter().zip(names) {
            let ok = KeyPolicy::default().check(key, &NO_HASH).unwrap();
            assert_eq!(
                ok.to_string(),
                if name == "RSA" { "RSA-2048" } else { name }
            );
            let err = all_off.check(key, &NO_HASH).unwrap_err();
            assert_eq!(err, WeakKey::Disabled { key_type: name });
            assert_eq!(
                err.to_string(),
                format!("{name} keys are disabled by policy")
            );
        }
        // Switching one off leaves the others alone.
        let no_p384 = KeyPolicy {
            allow_ecdsa_p384: false,
            ..KeyPolicy::default()
        };
        assert!(no_p384.check(&keys[1], &NO_HASH).is_ok());
        assert!(no_p384.check(&keys[2], &NO_HASH).is_err());
    }

    // ---------------------------------------------------------------------
    // ECDSA
    // ---------------------------------------------------------------------

    fn check_ec(curve: EcCurve, point: &[u8]) -> Result<KeyDescription, WeakKey> {
        KeyPolicy::default().check(&PublicKeyMaterial::Ec { curve, point }, &NO_HASH)
    }

    #[test]
    fn ec_good_points() {
        for (curve, good, g, desc) in [
            (EcCurve::P256, GOOD_P256, P256_G, KeyDescription::EcdsaP256),
            (EcCurve::P384, GOOD_P384, P384_G, KeyDescription::EcdsaP384),
        ] {
            assert_eq!(
                check_ec(curve, &hex::decode(good).unwrap()),
                Ok(desc.clone())
            );
            assert_eq!(check_ec(curve, &hex::decode(g).unwrap()), Ok(desc));
        }
        assert_eq!(KeyDescription::EcdsaP256.to_string(), "ECDSA P-256");
        assert_eq!(KeyDescription::EcdsaP384.to_string(), "ECDSA P-384");
    }

    #[test]
    fn ec_bad_points() {
        for (curve, good) in [(EcCurve::P256, GOOD_P256), (EcCurve::P384, GOOD_P384)] {
            let good = hex::decode(good).unwrap();
            let len = good.len();
            let clen = (len - 1) / 2;

            // Compressed form of the good point.
            let mut compressed = vec![0x02 | (good[len - 1] & 1)];
            compressed.extend_from_slice(&good[1..=clen]);
            let err = check_ec(curve, &compressed).unwrap_err();
            assert_eq!(err, WeakKey::EcPointCompressed { curve });
            assert!(err.to_string().contains("compressed point"));
            compressed[0] = 0x03;
            assert_eq!(
                check_ec(curve, &compressed),
                Err(WeakKey::EcPointCompressed { curve })
            );

            // Point at infinity: SEC 1 single zero octet, and (0, 0).
            assert_eq!(
                check_ec(curve, &[0x00]),
                Err(WeakKey::EcPointAtInfinity { curve })
            );
            let mut zeros = vec![0u8; len];
            zeros[0] = 0x04;
            assert_eq!(
                check_ec(curve, &zeros),
                Err(WeakKey::EcPointAtInfinity { curve })
            );

            // Hybrid / garbage tags.
            for tag in [0x06u8, 0x07, 0x05, 0xff] {
                let mut bad = good.clone();
                bad[0] = tag;
                assert_eq!(
                    check_ec(curve, &bad),
                    Err(WeakKey::EcPointEncoding { curve, tag })
                );
            }

            // Wrong lengths.
            for l in [1usize, len - 1, len + 1] {
                let mut bad = good.clone();
                bad.resize(l, 0);
                assert_eq!(
                    check_ec(curve, &bad),
                    Err(WeakKey::EcPointLength {
                        curve,
                        expected: len,
                        actual: l
                    })
                );
            }
            assert_eq!(
                check_ec(curve, &[]),
                Err(WeakKey::EcPointLength {
                    curve,
                    expected: len,
                    actual: 0
                })
            );

            // Coordinates ≥ p.
            let p = curve_params(curve).p.to_bytes_be();
            let mut bad = good.clone();
            bad[1..=clen].copy_from_slice(&p);
            assert_eq!(
                check_ec(curve, &bad),
                Err(WeakKey::EcCoordinateOutOfRange { curve })
            );
            let mut bad = good.clone();
            bad[clen + 1..].copy_from_slice(&[0xff; 48][..clen]);
            assert_eq!(
                check_ec(curve, &bad),
                Err(WeakKey::EcCoordinateOutOfRange { curve })
            );

            // Off the curve: flip a bit of y.
            let mut bad = good.clone();
            bad[len - 1] ^= 1;
            let err = check_ec(curve, &bad).unwrap_err();
            assert_eq!(err, WeakKey::EcPointNotOnCurve { curve });
            assert_eq!(
                err.to_string(),
                format!("ECDSA {curve} public key point is not on the curve")
            );

            // The negated point (x, p − y) is on the curve too.
            let pp = &curve_params(curve).p;
            let y = BigUint::from_bytes_be(&good[clen + 1..]);
            let neg_y = (pp - y).to_bytes_be();
            let mut neg = good.clone();
            neg[clen + 1..].fill(0);
            neg[len - neg_y.len()..].copy_from_slice(&neg_y);
            assert!(check_ec(curve, &neg).is_ok());
        }
        // A P-256 point presented as P-384 (and vice versa) has the wrong length.
        let p256 = hex::decode(GOOD_P256).unwrap();
        assert!(matches!(
            check_ec(EcCurve::P384, &p256),
            Err(WeakKey::EcPointLength {
                expected: 97,
                actual: 65,
                ..
            })
        ));
    }

    // ---------------------------------------------------------------------
    // Ed25519
    // ---------------------------------------------------------------------

    fn check_ed(key: &[u8]) -> Result<KeyDescription, WeakKey> {
        KeyPolicy::default().check(&PublicKeyMaterial::Ed25519 { key }, &NO_HASH)
    }

    #[test]
    fn ed25519_good_keys() {
        // RFC 8032 §7.1 test vectors 1–3.
        for k in [
            GOOD_ED25519,
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        ] {
            assert_eq!(
                check_ed(&hex::decode(k).unwrap()),
                Ok(KeyDescription::Ed25519)
            );
        }
        assert_eq!(KeyDescription::Ed25519.to_string(), "Ed25519");
    }

    #[test]
    fn csr_07_ed25519_all_zero_and_identity() {
        let err = check_ed(&[0u8; 32]).unwrap_err();
        assert_eq!(err, WeakKey::Ed25519AllZero);
        assert_eq!(err.to_string(), "Ed25519 public key is all zeros");

        let mut identity = [0u8; 32];
        identity[0] = 0x01;
        let err = check_ed(&identity).unwrap_err();
        assert_eq!(err, WeakKey::Ed25519SmallOrder);
        assert_eq!(err.to_string(), "Ed25519 public key is a small-order point");
    }

    #[test]
    fn csr_07_ed25519_small_order_list() {
        let set = ed25519_small_order_set();
        assert_eq!(set.len(), ED25519_SMALL_ORDER.len());
        for (i, enc) in set.iter().enumerate() {
            let r = check_ed(enc).unwrap_err();
            if enc.iter().all(|&b| b == 0) {
                assert_eq!(r, WeakKey::Ed25519AllZero);
            } else {
                assert_eq!(r, WeakKey::Ed25519SmallOrder, "entry {i}");
            }
            // The first eight are canonical encodings of points of order
            // dividing 8; the rest are non-canonical and fail strict decoding.
            match ed25519::decode(enc) {
                Some(pt) => {
                    assert!(i < 8, "entry {i} decoded");
                    assert!(ed25519::has_small_order(&pt), "entry {i}");
                }
                None => assert!(i >= 8, "entry {i} did not decode"),
            }
        }
        // Good keys do not have small order.
        let good = <[u8; 32]>::try_from(hex::decode(GOOD_ED25519).unwrap()).unwrap();
        assert!(!ed25519::has_small_order(&ed25519::decode(&good).unwrap()));
    }

    #[test]
    fn ed25519_bad_encodings() {
        for len in [0usize, 31, 33, 64] {
            assert_eq!(
                check_ed(&vec![7u8; len]),
                Err(WeakKey::Ed25519Length { actual: len })
            );
        }
        // y = 2 does not give a square x² (not on the curve).
        let mut not_on_curve = [0u8; 32];
        not_on_curve[0] = 2;
        assert!(ed25519::decode(&not_on_curve).is_none());
        assert_eq!(
            check_ed(&not_on_curve),
            Err(WeakKey::Ed25519InvalidEncoding)
        );
        // Non-canonical y = p + 2 .. p + 18 (all ≥ p) refused.
        for v in 0xefu8..=0xff {
            let mut enc = [0xffu8; 32];
            enc[0] = v;
            enc[31] = 0x7f;
            assert!(check_ed(&enc).is_err());
        }
    }
}
