//! An in-memory issuance log: the same uniqueness rules as the durable
//! backends, nothing on disk. For benchmarks of the engine without the
//! durable log and for tests; never for a running service.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    IssuanceIntent, IssuanceLog, IssuanceQuery, IssuanceRecord, Origin, Outcome, Serial, StoreError,
};

/// Issuance records held in a map.
#[derive(Debug, Default)]
pub struct MemoryIssuanceLog {
    records: Mutex<HashMap<Serial, IssuanceRecord>>,
}

impl MemoryIssuanceLog {
    fn with_records<T>(&self, f: impl FnOnce(&mut HashMap<Serial, IssuanceRecord>) -> T) -> T {
        let mut guard = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    fn finish(
        &self,
        serial: &Serial,
        outcome: Outcome<'_>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with_records(|records| {
            records
                .get_mut(serial)
                .ok_or_else(|| StoreError::UnknownSerial(serial.clone()))?
                .finish(outcome, at)
        })
    }
}

#[async_trait]
impl IssuanceLog for MemoryIssuanceLog {
    async fn record_intent(&self, intent: &IssuanceIntent) -> Result<(), StoreError> {
        self.with_records(|records| {
            if records.contains_key(&intent.serial) {
                return Err(StoreError::SerialInUse(intent.serial.clone()));
            }
            records.insert(intent.serial.clone(), IssuanceRecord::from_intent(intent));
            Ok(())
        })
    }

    async fn record_issued(
        &self,
        serial: &Serial,
        certificate_der: &[u8],
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Issued(certificate_der), at)
    }

    async fn record_abandoned(
        &self,
        serial: &Serial,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.finish(serial, Outcome::Abandoned(reason), at)
    }

    async fn issuance(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        Ok(self.with_records(|records| records.get(serial).cloned()))
    }

    async fn issuance_count(&self) -> Result<u64, StoreError> {
        Ok(self.with_records(|records| records.len() as u64))
    }

    async fn search_issuances(
        &self,
        query: &IssuanceQuery,
        limit: usize,
    ) -> Result<Vec<IssuanceRecord>, StoreError> {
        let matching: Vec<IssuanceRecord> = self.with_records(|records| {
            records
                .values()
                .filter(|record| query.matches(record))
                .cloned()
                .collect()
        });
        Ok(super::newest_issuances(matching.into_iter(), limit))
    }

    async fn certificates_from(&self, origin: Origin<'_>) -> Result<Vec<Serial>, StoreError> {
        Ok(self.with_records(|records| {
            let mut serials: Vec<Serial> = records
                .values()
                .filter(|r| origin.matches(&r.intent))
                .map(|r| r.intent.serial.clone())
                .collect();
            serials.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            serials
        }))
    }
}
