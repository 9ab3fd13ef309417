//! Encryption at rest: no plaintext token in the database file, ciphertexts bound to their row,
//! and key rotation that keeps every connection readable.

use std::sync::Arc;

use connect_hub::crypto::{generate_key_b64, KeyRing};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::spawn_app;

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", path.display());
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_database_file_never_holds_a_token_in_plaintext() {
    let app = spawn_app().await;
    if app.skip_on_postgres("reads the SQLite file's bytes (the sealed columns are the same SQL on both)") {
        return;
    }
    let connected = app.connect(Some(6847)).await;
    let id = app.connection_id_for(6847).await;
    let refreshed = app.state.tokens.refresh(&id, "test").await.unwrap();
    let stored = app.state.store.tokens(&id).await.unwrap().unwrap();

    let bytes = file_bytes(&app.db_path);
    assert!(bytes.len() > 4096, "read the real database file and its WAL");
    for token in [
        connected.access_token.as_str(),
        connected.refresh_token.as_str(),
        refreshed.token.expose_secret(),
        stored.refresh.as_ref().unwrap().expose_secret(),
    ] {
        assert!(!contains(&bytes, token), "a token is in the database file in plaintext");
    }
    // The test would notice a plaintext token: the company name, stored in the clear, is found.
    assert!(contains(&bytes, "Harbour View Realty"));
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_row_does_not_open() {
    let app = spawn_app().await;
    app.connect(Some(6847)).await;
    app.connect(Some(7012)).await;
    let a = app.connection_id_for(6847).await;
    let b = app.connection_id_for(7012).await;
    sqlx::query(
        "update connections set access_token = (select access_token from connections where id = $1) where id = $2",
    )
    .bind(a.as_str())
    .bind(b.as_str())
    .execute(app.state.store.pool())
    .await
    .unwrap();
    let err = app.state.store.tokens(&b).await.err().expect("refused");
    assert!(format!("{err:#}").contains("moved from another row"), "{err:#}");
    assert!(app.state.store.tokens(&a).await.unwrap().is_some());
}

#[tokio::test]
async fn rotating_the_key_keeps_every_connection_readable() {
    let app = spawn_app().await;
    let mut expected = Vec::new();
    for company in [6847, 7012, 9001] {
        let c = app.connect(Some(company)).await;
        expected.push((app.connection_id_for(company).await, c.access_token, c.refresh_token));
    }
    let old_key = SecretString::from(app.vars["ENCRYPTION_KEY"].clone());
    let new_key = SecretString::from(generate_key_b64(32));
    let store = &app.state.store;

    let rotating = store.with_keys(Arc::new(KeyRing::from_base64(&new_key, std::slice::from_ref(&old_key)).unwrap()));
    let report = rotating.rotate_keys().await.unwrap();
    assert_eq!(report.resealed, 6, "three access and three refresh tokens");
    assert_eq!(rotating.rotate_keys().await.unwrap().resealed, 0, "a second run has nothing to do");

    let new_only = store.with_keys(Arc::new(KeyRing::from_base64(&new_key, &[]).unwrap()));
    for (id, access, refresh) in &expected {
        let t = new_only.tokens(id).await.unwrap().unwrap();
        assert_eq!(t.access.unwrap().expose_secret(), access);
        assert_eq!(t.refresh.unwrap().expose_secret(), refresh);
    }
    let old_only = store.with_keys(Arc::new(KeyRing::from_base64(&old_key, &[]).unwrap()));
    let err = old_only.tokens(&expected[0].0).await.err().expect("the old key alone no longer opens anything");
    assert!(format!("{err:#}").contains("ENCRYPTION_KEYS_OLD"), "{err:#}");
}
