//! ATTACKS ROB-06: kill -9 during concurrent issuance loses nothing that was
//! acknowledged. A child process (`slcs bench --print-serials`) issues
//! certificates concurrently through the durable path and prints each serial
//! only after the engine acknowledged it; the test SIGKILLs it at a random
//! moment, reopens the store, and finds every printed serial issued.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use slcs::store::sled::{OpenMode, SledOptions, SledStore};
use slcs::store::{IssuanceLog as _, IssuanceState, Serial};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{run_slcs, slcs_bin, wait_timeout};

fn random_below(limit: u32) -> u32 {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    u32::from_le_bytes(bytes) % limit
}

#[tokio::test]
async fn rob_06_acknowledged_certificates_survive_sigkill() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_arg = data.to_str().unwrap();
    assert!(
        run_slcs(&["--data-dir", data_arg, "init"], &[])
            .status
            .success()
    );

    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let kill_after = 10 + random_below(400) as usize;
        let mut child = Command::new(slcs_bin())
            .args([
                "--data-dir",
                data_arg,
                "bench",
                "--count",
                "1000000",
                "--concurrency",
                "8",
                "--threads",
                "2",
                "--print-serials",
            ])
            .env_remove("SLCS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("bench stopped early").unwrap();
            acknowledged.push(line);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        // Lines printed before the kill were acknowledged too.
        for line in lines {
            acknowledged.push(line.unwrap());
        }
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        assert!(!status.success(), "round {round}: the child was not killed");
    }

    let serials: Vec<Serial> = acknowledged
        .iter()
        .map(|line| line.strip_prefix("serial ").unwrap().parse().unwrap())
        .collect();
    let unique: HashSet<&Serial> = serials.iter().collect();
    assert_eq!(
        unique.len(),
        serials.len(),
        "a serial was acknowledged twice"
    );

    let store = SledStore::open(&SledOptions {
        path: data.join("store"),
        cache_capacity_bytes: 8 << 20,
        mode: OpenMode::MustExist,
        ca_key_sha256: None,
    })
    .unwrap();
    for serial in &serials {
        let record = store
            .issuance(serial)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged serial {serial} missing after kill -9"));
        assert_eq!(record.state, IssuanceState::Issued, "{serial}");
        let der = record.certificate.expect("certificate recorded");
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.raw_serial(), serial.as_bytes());
    }
    assert!(store.issuance_count().await.unwrap() >= serials.len() as u64);
    println!(
        "{} acknowledged certificates over 3 kills, all recovered",
        serials.len()
    );
}
