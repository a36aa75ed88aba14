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
fn returned_documents_are_read_from_each_result_shape() {
    let stamp = json!({"topic": "t", "partition": 1, "offset": 7});
    let search = json!({"results": [{"id": "a", "collection": "c", "freshness": stamp}]});
    let doc = json!({"document": {"id": "b", "collection": "c", "freshness": stamp}});
    let fresh = json!({"documents": [
        {"id": "x", "status": "found", "freshness": stamp},
        {"id": "y", "status": "not_found"}
    ]});
    let ids = |v: &Value, c: Option<&str>| -> Vec<(String, String, i64)> {
        returned(v, c)
            .into_iter()
            .map(|r| (r.collection, r.id, r.offset))
            .collect()
    };
    assert_eq!(ids(&search, None), [("c".into(), "a".into(), 7)]);
    assert_eq!(ids(&doc, None), [("c".into(), "b".into(), 7)]);
    assert_eq!(ids(&fresh, Some("k")), [("k".into(), "x".into(), 7)]);
    assert!(ids(&json!({"collections": []}), None).is_empty());
}
