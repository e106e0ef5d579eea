//! The audit log as a hash chain, end to end: `slcs audit verify` on a
//! live server, `slcs audit export` checked here line by line with its own
//! hashing (only the published formula, no slcs code), and a record
//! changed on disk while the server was down found after the restart.

use serde_json::Value;

use crate::certificate::service_token;
use crate::{Server, run_slcs};

/// `slcs audit …` against `server`: exit code, stdout, stderr.
fn audit(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let url = format!("https://localhost:{}", server.addr.port());
    let mut all = vec!["--data-dir", server.data_dir.to_str().unwrap(), "audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &url, "--json"]);
    let output = run_slcs(&all, &[]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// SHA-256("slcs-audit-v1" ‖ 0 ‖ seq ‖ prev ‖ event), as docs/security.md
/// publishes it.
fn link(seq: u64, prev: &[u8], event: &[u8]) -> String {
    let mut input = b"slcs-audit-v1\0".to_vec();
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(prev);
    input.extend_from_slice(event);
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &input,
    ))
}

#[test]
fn the_audit_chain_verifies_exports_checkably_and_reveals_a_record_changed_on_disk() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    for id in ["batch-a", "batch-b", "batch-c"] {
        service_token(&server, id);
    }

    let (code, out, err) = audit(&server, &["verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    let verified = report["verified"].as_u64().unwrap();
    assert!(
        verified >= 6,
        "three registrations and three tokens: {report}"
    );
    let head = report["head"].as_str().unwrap().to_owned();

    // The export, verified here from the bytes of each line.
    let (code, lines, err) = audit(&server, &["export"]);
    assert_eq!(code, Some(0), "{err}");
    let mut prev = vec![0u8; 32];
    let mut seqs = Vec::new();
    for line in lines.lines() {
        let json: Value = serde_json::from_str(line).unwrap();
        let seq = json["seq"].as_u64().unwrap();
        let raw_event =
            &line[line.find(",\"event\":").unwrap() + ",\"event\":".len()..line.len() - 1];
        assert_eq!(json["prev"].as_str().unwrap(), hex::encode(&prev), "{seq}");
        let hash = link(seq, &prev, raw_event.as_bytes());
        assert_eq!(json["hash"].as_str().unwrap(), hash, "{seq}");
        prev = hex::decode(&hash).unwrap();
        seqs.push(seq);
        assert!(json["event"]["action"].is_string());
    }
    assert_eq!(seqs.len() as u64, verified);
    assert_eq!(hex::encode(&prev), head, "the export ends at the head");
    let (_, after, _) = audit(&server, &["export", "--after", &seqs[2].to_string()]);
    assert_eq!(after.lines().count(), seqs.len() - 3);

    // Down, one record's action rewritten on disk, up again: found.
    assert!(server.terminate().success());
    let victim = seqs[3];
    {
        let db = sled::open(data.join("store")).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let stored = tree.get(victim.to_be_bytes()).unwrap().unwrap().to_vec();
        let text = String::from_utf8_lossy(&stored[65..]).into_owned();
        let forged = text.replacen("token.issue", "token.nopee", 1);
        assert_ne!(forged, text, "{text}");
        let mut changed = stored[..65].to_vec();
        changed.extend_from_slice(forged.as_bytes());
        tree.insert(victim.to_be_bytes(), changed).unwrap();
        db.flush().unwrap();
    }
    let server = Server::start(&data, &[]);
    let (code, out, err) = audit(&server, &["verify"]);
    assert_ne!(code, Some(0), "a broken chain fails the verb: {out}");
    assert!(err.contains("broken"), "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(
        report["problems"],
        serde_json::json!([{"problem": "modified", "seq": victim}]),
        "{report}"
    );
}
