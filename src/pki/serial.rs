//! Certificate serial numbers.
//!
//! RFC 5280 §4.1.2.2: positive, unique per CA, at most 20 octets. CA/B BR
//! §7.1: at least 64 bits from a CSPRNG, non-sequential. slcs uses 18 octets:
//! one per-instance prefix octet (1..=127, so the INTEGER is positive and
//! minimal without a padding octet, and replicas with different prefixes can
//! never collide) followed by 136 random bits. Uniqueness against the
//! issuance log is then enforced by the store (`record_intent` refuses a
//! serial it holds), with a retry on the astronomically unlikely collision.

use aws_lc_rs::rand::SecureRandom as _;

use crate::store::Serial;

/// Where serial randomness comes from. Production uses the system CSPRNG;
/// tests script it to force collisions.
pub trait RandomSource: Send + Sync {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomFailure>;
}

/// The system CSPRNG (aws-lc-rs `SystemRandom`).
#[derive(Debug, Default)]
pub struct SystemRandomSource(aws_lc_rs::rand::SystemRandom);

impl RandomSource for SystemRandomSource {
    fn fill(&self, buf: &mut [u8]) -> Result<(), RandomFailure> {
        self.0.fill(buf).map_err(|_| RandomFailure)
    }
}

/// Octets in a serial.
pub const SERIAL_OCTETS: usize = 18;

/// Random bits in a serial.
pub const SERIAL_RANDOM_BITS: usize = (SERIAL_OCTETS - 1) * 8;

/// Makes serials for one instance.
pub struct SerialGenerator {
    prefix: u8,
    random: Box<dyn RandomSource>,
}

impl std::fmt::Debug for SerialGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialGenerator")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The random source failed; nothing can be issued safely.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomFailure;

impl SerialGenerator {
    /// A generator with the given prefix (1..=127, checked by the config)
    /// drawing from the system CSPRNG.
    pub fn new(prefix: u8) -> Self {
        Self::with_random(prefix, Box::new(SystemRandomSource::default()))
    }

    /// A generator drawing from `random`; tests use a scripted source to
    /// force collisions.
    pub fn with_random(prefix: u8, random: Box<dyn RandomSource>) -> Self {
        Self {
            prefix: prefix.clamp(1, 127),
            random,
        }
    }

    /// The next serial.
    pub fn next_serial(&self) -> Result<Serial, RandomFailure> {
        let mut bytes = vec![0u8; SERIAL_OCTETS];
        let (first, rest) = bytes.split_at_mut(1);
        self.random.fill(rest)?;
        if let Some(octet) = first.first_mut() {
            *octet = self.prefix;
        }
        Serial::from_bytes(bytes).map_err(|_| RandomFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn serials_are_positive_prefixed_and_18_octets() {
        let generator = SerialGenerator::new(0x2a);
        let serial = generator.next_serial().unwrap();
        assert_eq!(serial.as_bytes().len(), SERIAL_OCTETS);
        assert_eq!(serial.as_bytes()[0], 0x2a);
        assert_ne!(generator.next_serial().unwrap(), serial);
    }

    #[test]
    fn hundred_thousand_serials_are_distinct() {
        let generator = SerialGenerator::new(1);
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            assert!(seen.insert(generator.next_serial().unwrap()));
        }
    }
}
