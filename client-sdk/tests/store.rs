//! The local store: round trip, reopening, encryption at rest, keys.

use std::path::Path;

use client_sdk::{
    Client, Error, FixedKey, KeyFile, Passphrase, RecordKind, Store, StoreKey, SyncStatus,
};
use serde_json::json;

const NOTES: &str = "Chị Lò Thị Mai, bản Nà Lẹng, bị chồng đánh ngày 28/2";
const COMMUNE: &str = "04777";

fn fixed() -> FixedKey {
    FixedKey(StoreKey::from_bytes([42; 32]))
}

fn every_file(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn records_survive_reopening_with_their_edits() {
    let d = tempfile::tempdir().unwrap();
    let (id, news, shown, device, actor) = {
        let mut c = Client::open(d.path(), fixed()).unwrap();
        let id = c
            .create(
                RecordKind::GbvCase,
                &json!({"commune": COMMUNE, "detected_on": "2025-03-01", "notes": NOTES}),
            )
            .unwrap();
        c.set_many(
            id,
            &[
                ("perpetrator.counselled".into(), json!(true)),
                ("status".into(), json!("open")),
            ],
        )
        .unwrap();
        c.append(
            id,
            "services",
            &json!({"kind": "health", "provided_on": "2025-03-02", "provider": "TYT xã"}),
        )
        .unwrap();
        c.append(id, "violence_types", &json!("physical")).unwrap();
        let news = c
            .create(
                RecordKind::NewsItem,
                &json!({"commune": COMMUNE, "published_on": "2025-01-05"}),
            )
            .unwrap();
        c.delete(news, "entered twice").unwrap();
        (
            id,
            news,
            c.show(id).unwrap(),
            c.store().device_id().to_string(),
            c.store().actor().clone(),
        )
    };
    let c = Client::open(d.path(), fixed()).unwrap();
    assert_eq!(c.store().device_id(), device);
    assert_eq!(c.store().actor(), &actor);
    // A phone's record ids lead with its actor's bytes, so a page of them compresses
    // (`RecordId::made_by`): version 8 UUIDs, each its own.
    assert_ne!(id, news);
    for made in [id, news] {
        assert_eq!(made.0[..6], actor.to_bytes()[..6], "{made}");
        assert_eq!(made.to_string().as_bytes()[14], b'8', "{made} is a version 8 UUID");
    }
    assert_eq!(c.show(id).unwrap(), shown);
    assert_eq!(shown["notes"], NOTES);
    assert_eq!(shown["perpetrator"]["counselled"], true);
    assert_eq!(shown["services"][0]["provider"], "TYT xã");
    assert_eq!(shown["sync_status"], "pending");
    assert_eq!(
        shown["status"], "open",
        "the record's own status field is untouched"
    );
    assert_eq!(c.status(id).unwrap(), SyncStatus::Pending);
    let deleted = c.show(news).unwrap();
    assert_eq!(
        (
            deleted["deleted"].clone(),
            deleted["deleted_reason"].clone()
        ),
        (json!(true), json!("entered twice"))
    );
    assert_eq!(c.list(Some(RecordKind::NewsItem)).unwrap().len(), 1);
    assert_eq!(c.list(None).unwrap().len(), 2);
    assert_eq!(
        c.list(Some(RecordKind::TraffickingReturnee)).unwrap().len(),
        0
    );
}

#[test]
fn refused_edits_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Client::open(d.path(), fixed()).unwrap();
    let id = c
        .create(
            RecordKind::GbvCase,
            &json!({"commune": COMMUNE, "detected_on": "2025-03-01"}),
        )
        .unwrap();
    let before = c.show(id).unwrap();
    let err = c
        .set_many(
            id,
            &[
                ("status".into(), json!("closed")),
                ("victim.sex".into(), json!("f")),
            ],
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("field `victim.sex`"), "{err}");
    assert_eq!(c.show(id).unwrap(), before, "all assignments or none");
    let err = c.set(id, "commune", &json!("04778")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `commune` is fixed when the record is created"
    );
    let err = c
        .create(RecordKind::GbvCase, &json!({"commune": COMMUNE}))
        .unwrap_err();
    assert_eq!(err.to_string(), "missing required field `detected_on`");
    let unknown = client_sdk::RecordId::random();
    assert!(matches!(c.show(unknown), Err(Error::UnknownRecord(_))));
    let reopened = Client::open(d.path(), fixed()).unwrap();
    assert_eq!(reopened.ids(None), vec![id]);
}

#[test]
fn nothing_readable_is_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let mut c = Client::open(d.path(), KeyFile::new(keys.path())).unwrap();
    for _ in 0..3 {
        let id = c
            .create(
                RecordKind::GbvCase,
                &json!({"commune": COMMUNE, "detected_on": "2025-03-01", "notes": NOTES}),
            )
            .unwrap();
        c.set(id, "notes", &json!(format!("{NOTES} (2)"))).unwrap();
    }
    let files = every_file(d.path());
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains(&bytes, NOTES.as_bytes()),
            "notes in clear in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, "Nà Lẹng".as_bytes()),
            "notes in clear in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, COMMUNE.as_bytes()),
            "commune in clear in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, c.store().device_id().as_bytes()),
            "device id in clear in {}",
            file.display()
        );
    }
    // The key lives outside the store, readable by its owner only.
    let key_files = every_file(keys.path());
    assert_eq!(key_files.len(), 1);
    assert!(!key_files[0].starts_with(d.path()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_files[0])
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Without the key file the store cannot be opened.
    let other_keys = tempfile::tempdir().unwrap();
    let err = Store::open(d.path(), KeyFile::new(other_keys.path())).unwrap_err();
    assert!(
        err.to_string().contains("key of this store is missing"),
        "{err}"
    );
}

#[test]
fn a_wrong_secret_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut c = Client::open(d.path(), Passphrase::new("mật khẩu đúng")).unwrap();
        c.create(
            RecordKind::NewsItem,
            &json!({"commune": COMMUNE, "published_on": "2025-01-05", "title": NOTES}),
        )
        .unwrap();
    }
    let err = Store::open(d.path(), Passphrase::new("sai")).unwrap_err();
    assert!(matches!(err, Error::Decrypt));
    assert_eq!(
        err.to_string(),
        "cannot decrypt the store: wrong secret (GESYNC_STORE_SECRET) or damaged store"
    );
    let keys = tempfile::tempdir().unwrap();
    let err = Store::open(d.path(), KeyFile::new(keys.path())).unwrap_err();
    assert!(err.to_string().contains("GESYNC_STORE_SECRET"), "{err}");
    let c = Client::open(d.path(), Passphrase::new("mật khẩu đúng")).unwrap();
    assert_eq!(c.list(None).unwrap()[0]["title"], NOTES);
    for file in every_file(d.path()) {
        assert!(
            !contains(&std::fs::read(&file).unwrap(), COMMUNE.as_bytes()),
            "{}",
            file.display()
        );
    }
}

#[test]
fn a_damaged_record_file_is_reported_not_ignored() {
    let d = tempfile::tempdir().unwrap();
    let id = {
        let mut c = Client::open(d.path(), fixed()).unwrap();
        c.create(
            RecordKind::NewsItem,
            &json!({"commune": COMMUNE, "published_on": "2025-01-05"}),
        )
        .unwrap()
    };
    let path = d.path().join("records").join(id.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(
        Store::open(d.path(), fixed()),
        Err(Error::Decrypt)
    ));
}

#[test]
fn a_store_is_only_made_in_an_empty_directory() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("thesis.odt"), "x").unwrap();
    let err = Client::open(d.path(), fixed()).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not empty and holds no gesync store"),
        "{err}"
    );
    assert!(Client::open(d.path().join("new/nested"), fixed()).is_ok());
}
