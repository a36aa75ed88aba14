use serde_json::json;

use super::*;

fn entry(n: u32) -> Entry {
    Entry {
        time: "2026-01-01T00:00:00.000Z".into(),
        request_id: format!("r{n}"),
        transport: Transport::Http,
        principal: Some(Principal {
            sub: Some("alice".into()),
            iss: Some("https://i".into()),
        }),
        client: Some("test-client 1.0".into()),
        http: None,
        tool: Some("search".into()),
        arguments: Some(json!({"query": format!("q{n}")})),
        results: vec![Returned {
            collection: "c".into(),
            id: format!("d{n}"),
            topic: "t".into(),
            partition: 0,
            offset: i64::from(n),
        }],
        latency_ms: 1.5,
        outcome: Outcome::Ok,
        error: None,
        status: None,
    }
}

fn write(log: &AuditLog, range: std::ops::Range<u32>) {
    for n in range {
        log.record(entry(n));
    }
    log.flush();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("audit.jsonl.") && !name.ends_with(".lock")
        })
        .collect();
    rotated.sort();
    rotated.push(path.to_path_buf());
    rotated
}

fn broken_at(files: &[PathBuf]) -> (PathBuf, usize, String) {
    match verify_chain(files).unwrap() {
        Verdict::Broken(b) => (b.file, b.line, b.what),
        Verdict::Intact(i) => panic!("expected a break, chain is intact: {i:?}"),
    }
}

#[test]
fn lines_are_chained_from_genesis_and_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, 1 << 20, false).unwrap();
    write(&log, 0..3);
    log.close();
    let log = AuditLog::open(&path, 1 << 20, false).unwrap();
    write(&log, 3..5);
    log.close();

    let got = lines(&path);
    assert_eq!(got.len(), 5);
    let mut prev = GENESIS.to_string();
    for (i, line) in got.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], json!(i + 1));
        assert_eq!(v["prev"], json!(prev));
        assert_eq!(v["request_id"], json!(format!("r{i}")));
        assert_eq!(v["principal"]["sub"], "alice");
        assert_eq!(v["results"][0]["offset"], json!(i));
        assert!(line.starts_with(&format!("{{\"seq\":{},\"prev\":", i + 1)));
        prev = sha256_hex(line.as_bytes());
    }
    match verify_chain(&[path]).unwrap() {
        Verdict::Intact(i) => {
            assert_eq!((i.lines, i.first_seq, i.last_seq), (5, Some(1), Some(5)));
            assert_eq!(i.last_hash, Some(prev));
        }
        Verdict::Broken(b) => panic!("{b:?}"),
    }
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let _log = AuditLog::open(&path, 1 << 20, false).unwrap();
    assert!(matches!(
        AuditLog::open(&path, 1 << 20, false),
        Err(AuditError::Locked { .. })
    ));
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, 1024, false).unwrap();
    write(&log, 0..20);
    log.close();
    // Reopening after rotation continues from the current file.
    let log = AuditLog::open(&path, 1024, false).unwrap();
    write(&log, 20..25);
    log.close();
    let all = files(&path);
    assert!(all.len() > 3, "{all:?}");
    for f in &all {
        assert!(std::fs::metadata(f).unwrap().len() <= 1024, "{f:?}");
    }
    assert!(
        all[0]
            .to_string_lossy()
            .ends_with("audit.jsonl.000000000001")
    );
    match verify_chain(&all).unwrap() {
        Verdict::Intact(i) => assert_eq!((i.lines, i.last_seq), (25, Some(25))),
        Verdict::Broken(b) => panic!("{b:?}"),
    }
    // Dropping a middle file breaks the chain at the next one's first line.
    let mut gap = all.clone();
    gap.remove(1);
    let (file, line, what) = broken_at(&gap);
    assert_eq!((file, line), (all[2].clone(), 1));
    assert!(what.contains("follows"), "{what}");
    // Starting from a later file is fine: older files may have been archived.
    assert!(matches!(
        verify_chain(&all[1..]).unwrap(),
        Verdict::Intact(_)
    ));
}

#[test]
fn resuming_with_only_rotated_files_links_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, 1024, false).unwrap();
    write(&log, 0..12);
    log.close();
    // As if freshet stopped right after a rotation.
    let kept = dir.path().join("audit.jsonl.999999999999");
    std::fs::rename(&path, &kept).unwrap();
    let log = AuditLog::open(&path, 1024, false).unwrap();
    write(&log, 12..13);
    log.close();
    let mut all = files(&path);
    all.retain(|p| p != &kept);
    all.insert(all.len() - 1, kept);
    assert!(matches!(verify_chain(&all).unwrap(), Verdict::Intact(_)));
}

#[test]
fn tampering_is_found_at_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, 1 << 20, false).unwrap();
    write(&log, 0..6);
    log.close();
    let original = lines(&path);
    let save = |ls: &[String]| std::fs::write(&path, ls.join("\n") + "\n").unwrap();
    let check = |ls: Vec<String>| {
        save(&ls);
        let (_, line, what) = broken_at(std::slice::from_ref(&path));
        (line, what)
    };

    let mut edited = original.clone();
    edited[2] = edited[2].replace("\"q2\"", "\"q9\"");
    let (line, what) = check(edited);
    assert_eq!(line, 4);
    assert!(what.contains("changed"), "{what}");

    let mut deleted = original.clone();
    deleted.remove(3);
    let (line, what) = check(deleted);
    assert_eq!(line, 4);
    assert!(what.contains("seq 5 follows seq 3"), "{what}");

    let mut swapped = original.clone();
    swapped.swap(1, 2);
    let (line, what) = check(swapped);
    assert_eq!(line, 2);
    assert!(what.contains("follows"), "{what}");

    let mut first = original.clone();
    first[0] = first[0].replace("alice", "mallory");
    assert_eq!(check(first).0, 2);

    let mut garbage = original.clone();
    garbage[4] = "{not json".into();
    assert!(check(garbage).1.contains("JSON"));

    save(&original);
    assert!(matches!(
        verify_chain(std::slice::from_ref(&path)).unwrap(),
        Verdict::Intact(_)
    ));
}

#[test]
fn arguments_are_redacted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let args = json!({"query": "secret plans", "vector": [0.1, 0.2], "k": 3});
    let plain = AuditLog::open(&dir.path().join("a.jsonl"), 1 << 20, false).unwrap();
    let redacting = AuditLog::open(&dir.path().join("b.jsonl"), 1 << 20, true).unwrap();
    assert_eq!(
        plain.arguments(args.as_object()),
        Some(json!({"query": "secret plans", "vector": "[2 numbers]", "k": 3}))
    );
    assert_eq!(
        redacting.arguments(args.as_object()),
        Some(json!({"query": "[redacted]", "vector": "[2 numbers]", "k": 3}))
    );
    assert_eq!(plain.arguments(None), None);
}

#[test]
fn returned_documents_come_from_each_typed_answer() {
    use crate::api::{ChangesResult, DocumentResult, FreshnessResult, SearchResult};
    let stamp = json!({"topic": "t", "partition": 1, "offset": 7, "event_time": "", "ingested_at": "",
                       "indexed_at": "", "age_ms": 0, "index_delay_ms": 0});
    let watermark = json!({"as_of": "", "caught_up": true, "partitions": []});
    let search: SearchResult = serde_json::from_value(json!({
        "results": [{"id": "a", "collection": "c", "score": 1.0, "title": null, "snippet": "",
                     "metadata": {}, "freshness": stamp}],
        "mode": "bm25", "freshness": watermark,
    }))
    .unwrap();
    let doc: DocumentResult = serde_json::from_value(json!({
        "document": {"id": "b", "collection": "c", "title": null, "text": "", "metadata": {},
                     "freshness": stamp},
        "freshness": watermark,
    }))
    .unwrap();
    let fresh: FreshnessResult = serde_json::from_value(json!({
        "documents": [{"id": "x", "status": "found", "freshness": stamp},
                      {"id": "y", "status": "not_found"}],
        "freshness": watermark,
    }))
    .unwrap();
    let changes: ChangesResult = serde_json::from_value(json!({
        "collection": "c", "next": "", "more": false, "truncated": false, "kept_since": "",
        "changes": [{"id": "d", "collection": "c", "kind": "delete", "title": null, "metadata": {},
                     "current": false, "freshness": stamp}],
        "freshness": watermark,
    }))
    .unwrap();
    let slot = ReturnedSlot::default();
    let ids = |answer: &dyn Fn(&ReturnedSlot)| -> Vec<(String, String, String, i64, i64)> {
        answer(&slot);
        slot.take()
            .into_iter()
            .map(|r| (r.collection, r.id, r.topic, r.partition, r.offset))
            .collect()
    };
    let one = |c: &str, id: &str| (c.to_string(), id.to_string(), "t".to_string(), 1, 7);
    assert_eq!(ids(&|s| s.record(&search, "")), [one("c", "a")]);
    assert_eq!(ids(&|s| s.record(&doc, "")), [one("c", "b")]);
    assert_eq!(
        ids(&|s| s.record(&fresh, "k")),
        [one("k", "x")],
        "the call's collection; ids not found return nothing"
    );
    assert_eq!(ids(&|s| s.record(&changes, "")), [one("c", "d")]);
    assert!(slot.take().is_empty());
}

fn intact(files: &[PathBuf], options: &VerifyOptions) -> Intact {
    match verify(files, options).unwrap() {
        Verdict::Intact(i) => i,
        Verdict::Broken(b) => panic!("{b:?}"),
    }
}

fn broken(files: &[PathBuf], options: &VerifyOptions) -> Break {
    match verify(files, options).unwrap() {
        Verdict::Broken(b) => b,
        Verdict::Intact(i) => panic!("expected a break, chain is intact: {i:?}"),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_failed_write_uses_up_its_seq_and_leaves_a_reported_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, 1 << 20, false).unwrap();
    assert_eq!(block_on(log.record_durable(entry(0))), Ok(1));
    assert!(log.unhealthy().is_none());
    log.fail_next_writes(2);
    for (n, seq) in [(1, 2), (2, 3)] {
        let failure = block_on(log.record_durable(entry(n))).unwrap_err();
        assert_eq!(failure.seq, seq);
        assert!(failure.reason.contains("No space left"), "{failure}");
    }
    let why = log.unhealthy().expect("readiness reports the failure");
    assert!(why.contains("audit log cannot be written"), "{why}");
    let mut metrics = String::new();
    log.render_metrics(&mut metrics);
    assert!(
        metrics.contains("freshet_audit_write_failures_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("freshet_audit_healthy 0"), "{metrics}");
    assert_eq!(block_on(log.record_durable(entry(3))), Ok(4));
    assert!(log.unhealthy().is_none(), "a good write clears it");
    log.close();
    // The half-written lines were cut off again: every line is whole JSON.
    let ls = lines(&path);
    assert_eq!(ls.len(), 2);
    let i = intact(&[path], &VerifyOptions::default());
    assert_eq!(i.lost, [(2, 3)]);
    assert_eq!((i.lines, i.last_seq), (2, Some(4)));
}

#[test]
fn a_full_device_refuses_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = AuditLog::open(&path, 1 << 20, false).unwrap();
    assert!(log.refuses_on_failure());
    for seq in 1..=3 {
        let failure = block_on(log.record_durable(entry(seq))).unwrap_err();
        assert_eq!(failure.seq, u64::from(seq));
    }
    assert!(log.unhealthy().is_some());
    log.close();
}

fn keyed(dir: &Path, key: Option<&[u8]>, max_bytes: u64) -> (PathBuf, PathBuf, AuditOptions) {
    let path = dir.join("audit.jsonl");
    let checkpoints = dir.join("checkpoints.jsonl");
    let mut options = AuditOptions::new(max_bytes, false);
    options.key = key.map(<[u8]>::to_vec);
    options.checkpoint_path = Some(checkpoints.clone());
    options.checkpoint_interval = Duration::from_millis(1);
    (path, checkpoints, options)
}

/// What someone without the key can do: edit a line and recompute every later `prev` as
/// plain SHA-256.
fn rehash(path: &Path, edit_line: usize) {
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    for (i, line) in lines(path).into_iter().enumerate() {
        let mut v: Value = serde_json::from_str(&line).unwrap();
        if i == edit_line {
            v["tool"] = json!("edited");
        }
        if let Some(fields) = v.as_object_mut() {
            fields.remove("chain");
        }
        if i > 0 {
            v["prev"] = json!(prev);
        }
        let text = serde_json::to_string(&v).unwrap();
        prev = sha256_hex(text.as_bytes());
        out.push(text);
    }
    std::fs::write(path, out.join("\n") + "\n").unwrap();
}

#[test]
fn checkpoints_detect_a_truncated_tail_a_dropped_head_and_a_rehash() {
    let dir = tempfile::tempdir().unwrap();
    let (path, checkpoints, options) = keyed(dir.path(), None, 1024);
    let log = AuditLog::open_with(&path, options).unwrap();
    for n in 0..12 {
        block_on(log.record_durable(entry(n))).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    log.close();
    let all = files(&path);
    assert!(all.len() > 2, "{all:?}");
    let with = VerifyOptions {
        key: None,
        checkpoints: Some(checkpoints.clone()),
    };
    let i = intact(&all, &with);
    assert!(i.checkpoints >= 2, "{i:?}");

    // A dropped head: the chain alone cannot tell, the checkpoints can.
    assert!(matches!(
        verify_chain(&all[1..]).unwrap(),
        Verdict::Intact(_)
    ));
    let b = broken(&all[1..], &with);
    assert_eq!(b.file, checkpoints);
    assert!(b.what.contains("head was dropped"), "{b:?}");

    // A truncated tail.
    let newest = all.last().unwrap();
    let mut kept = lines(newest);
    kept.pop();
    std::fs::write(newest, kept.join("\n") + "\n").unwrap();
    assert!(matches!(verify_chain(&all).unwrap(), Verdict::Intact(_)));
    let b = broken(&all, &with);
    assert!(b.what.contains("tail was truncated"), "{b:?}");

    // A re-hashed chain: every link is consistent again, the checkpoints are not.
    let one = dir.path().join("one.jsonl");
    let mut text = String::new();
    for f in &all {
        text.push_str(&std::fs::read_to_string(f).unwrap());
    }
    std::fs::write(&one, text).unwrap();
    rehash(&one, 2);
    assert!(matches!(
        verify_chain(std::slice::from_ref(&one)).unwrap(),
        Verdict::Intact(_)
    ));
    let b = broken(std::slice::from_ref(&one), &with);
    assert!(b.what.contains("checkpointed"), "{b:?}");
}

#[test]
fn a_keyed_chain_cannot_be_rehashed_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = b"0123456789abcdef-test-key";
    let (path, checkpoints, options) = keyed(dir.path(), Some(key), 1 << 20);
    let log = AuditLog::open_with(&path, options).unwrap();
    for n in 0..5 {
        block_on(log.record_durable(entry(n))).unwrap();
    }
    log.close();
    let with_key = VerifyOptions {
        key: Some(key.to_vec()),
        checkpoints: Some(checkpoints.clone()),
    };
    let i = intact(std::slice::from_ref(&path), &with_key);
    assert_eq!((i.lines, i.keyed_links), (5, 4));
    // Without the key a keyed chain is not taken as checked.
    let b = broken(std::slice::from_ref(&path), &VerifyOptions::default());
    assert!(b.what.contains("pass its key"), "{b:?}");
    // A wrong key fails at the first link.
    let wrong = VerifyOptions {
        key: Some(b"another-key-of-16-bytes".to_vec()),
        checkpoints: None,
    };
    assert_eq!(broken(std::slice::from_ref(&path), &wrong).line, 2);
    // A forged checkpoint (no MAC) is refused.
    let original_cps = std::fs::read_to_string(&checkpoints).unwrap();
    std::fs::write(
        &checkpoints,
        format!("{original_cps}{{\"seq\":9,\"hash\":\"00\",\"time\":\"t\"}}\n"),
    )
    .unwrap();
    let b = broken(std::slice::from_ref(&path), &with_key);
    assert!(b.what.contains("MAC"), "{b:?}");
    std::fs::write(&checkpoints, original_cps).unwrap();
    // Editing a line and re-hashing as plain SHA-256 is found.
    rehash(&path, 2);
    let key_only = VerifyOptions {
        key: Some(key.to_vec()),
        checkpoints: None,
    };
    let b = broken(std::slice::from_ref(&path), &key_only);
    assert!(b.what.contains("no line is keyed"), "{b:?}");
    assert!(matches!(
        verify(std::slice::from_ref(&path), &with_key).unwrap(),
        Verdict::Broken(_)
    ));
}
