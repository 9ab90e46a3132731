//! The conformance suite on the `azure` backend against Azurite (started by
//! `tests/servers/azurite.sh start`, as `make test` does), with the account
//! key and with a SAS token, plus what only Azure has: put-only SAS tokens,
//! block lists that expire, the Archive tier.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use offsite_backends::azure::{AzureBackend, AzureCredential, AzureOptions, SecretSource};
use offsite_backends::conformance::{Fixture, pattern};
use offsite_backends::{Backend, Checked, ErrorKind, Part, Readiness, Secret, get_bytes, list_all};

const CONFORMANCE: &str = "offsite-conformance";

fn env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| common::server_env("azurite.env", "azurite.sh"))
}

fn var(key: &str) -> String {
    env()
        .get(key)
        .unwrap_or_else(|| panic!("azurite.env has no {key}"))
        .clone()
}

/// Runs `tests/servers/azure_admin.py` (through its wrapper) and returns its output.
fn admin(args: &[&str]) -> String {
    let out = Command::new(var("AZURE_ADMIN"))
        .args(args)
        .env("AZURE_ENDPOINT", var("AZURE_ENDPOINT"))
        .env("AZURE_ACCOUNT", var("AZURE_ACCOUNT"))
        .env("AZURE_KEY", var("AZURE_KEY"))
        .output()
        .expect("run azure_admin.py");
    assert!(
        out.status.success(),
        "azure_admin.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sas(permissions: &str, hours: &str) -> String {
    admin(&["sas", CONFORMANCE, permissions, hours])
}

fn options(credential: AzureCredential) -> AzureOptions {
    AzureOptions {
        account: var("AZURE_ACCOUNT"),
        container: CONFORMANCE.into(),
        endpoint: Some(var("AZURE_ENDPOINT")),
        credential,
        access_tier: None,
        rehydrate_priority: "Standard".into(),
        put_only: false,
        timeout: Duration::from_secs(30),
    }
}

fn shared_key() -> AzureOptions {
    options(AzureCredential::SharedKey(SecretSource::Value(
        Secret::new(var("AZURE_KEY")),
    )))
}

fn fixture(test: &str, options: AzureOptions) -> Fixture {
    Fixture {
        connect: Box::new(move || {
            Arc::new(AzureBackend::new("azure", options.clone())) as Arc<dyn Backend>
        }),
        prefix: common::unique(test),
    }
}

/// Every request signed with the account key (Shared Key).
mod shared_key {
    use super::*;
    offsite_backends::conformance_tests!(|t| fixture(t, shared_key()); parts, out_of_order);
}

/// Every request authorized by a container SAS token in the URL.
mod sas_token {
    use super::*;
    fn full_sas() -> AzureOptions {
        static TOKEN: OnceLock<String> = OnceLock::new();
        let token = TOKEN.get_or_init(|| sas("racwdl", "2"));
        options(AzureCredential::Sas(SecretSource::Value(Secret::new(
            token.clone(),
        ))))
    }
    offsite_backends::conformance_tests!(|t| fixture(t, full_sas()); parts, out_of_order);

    /// A SAS that may read and list, not write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_without_permission_are_denied() {
        let f = fixture("writes_without_permission_are_denied", full_sas());
        let read_only = options(AzureCredential::Sas(SecretSource::Value(Secret::new(sas(
            "rl", "2",
        )))));
        let denied = Arc::new(AzureBackend::new("azure", read_only));
        offsite_backends::conformance::writes_without_permission_are_denied(&f, denied).await;
    }
}

async fn upload(b: &dyn Backend, key: &str, body: &[u8], part_size: usize) {
    let id = b
        .create_upload(key, part_size as u64)
        .await
        .expect("create");
    let mut receipts = Vec::new();
    for (index, chunk) in body.chunks(part_size).enumerate() {
        let part = Part {
            index: index as u32,
            offset: (index * part_size) as u64,
            body: Bytes::copy_from_slice(chunk),
        };
        receipts.push(b.put_part(key, &id, part).await.expect("part"));
    }
    b.complete_upload(key, &id, &receipts)
        .await
        .expect("complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_only_sas_uploads_and_nothing_else() {
    let token = sas("cw", "1");
    let mut o = options(AzureCredential::Sas(SecretSource::Value(Secret::new(
        token.clone(),
    ))));
    o.put_only = true;
    o.access_tier = Some("Cool".into());
    // Checked, as the application stacks it: it refuses what put_only rules out.
    let up = Checked::new(Arc::new(AzureBackend::new("azure", o.clone())));
    let caps = up.capabilities();
    assert!(!caps.list && !caps.read && !caps.delete);
    up.probe().await.expect("a put-only probe makes no call");

    let key = format!("{}/vol-000000.tar.zst", common::unique("put_only"));
    let body = pattern(700_000, 4);
    upload(&up, &key, &body, 256 * 1024).await;
    up.put(&format!("{key}.manifest"), Bytes::from_static(b"{}"))
        .await
        .expect("put");

    // Everything else is refused before any request, naming what to use instead.
    let err = up.list("conformance/").await.err().expect("list refused");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("put_only"), "{err}");
    assert!(up.get(&key, None).await.is_err());
    assert!(up.delete(&key).await.is_err());
    assert!(up.prepare_read(&key).await.is_err());

    // The server itself refuses reads to this token: the SAS really is put-only.
    o.put_only = false;
    let denied = AzureBackend::new("azure", o);
    let err = get_bytes(&denied, &key).await.expect_err("read denied");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("r (read)"), "{err}");
    assert!(!err.to_string().contains(&token), "{err}");

    // Whole, in the tier asked for; the manifest in Hot.
    let admin_backend = AzureBackend::new("azure", shared_key());
    assert!(get_bytes(&admin_backend, &key).await.expect("get") == body);
    assert!(admin(&["tier", CONFORMANCE, &key]).starts_with("Cool"));
    assert!(admin(&["tier", CONFORMANCE, &format!("{key}.manifest")]).starts_with("Hot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_unauthenticated_and_never_printed() {
    let wrong = var("AZURE_WRONG_KEY");
    let b = AzureBackend::new(
        "blob",
        options(AzureCredential::SharedKey(SecretSource::Value(
            Secret::new(wrong.clone()),
        ))),
    );
    for err in [
        b.probe().await.expect_err("probe refused"),
        b.put("conformance/wrong-key", Bytes::from_static(b"x"))
            .await
            .expect_err("put refused"),
    ] {
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{text}");
        assert!(text.contains("destination \"blob\""), "{text}");
        assert!(text.contains("account key was refused"), "{text}");
        assert!(!text.contains(&wrong), "{text}");
        assert!(!text.contains(&var("AZURE_KEY")), "{text}");
    }
    assert!(!format!("{b:?}").contains(&wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sas_is_unauthenticated_and_never_printed() {
    let token = sas("racwdl", "-1");
    let b = AzureBackend::new(
        "blob",
        options(AzureCredential::Sas(SecretSource::Value(Secret::new(
            token.clone(),
        )))),
    );
    let err = b.probe().await.expect_err("an expired token is refused");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{text}");
    assert!(text.contains("SAS token was refused"), "{text}");
    let sig = token
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("a signature");
    assert!(!text.contains(sig), "{text}");
    assert!(!format!("{b:?}").contains(sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_variable_is_named() {
    let b = AzureBackend::new(
        "blob",
        options(AzureCredential::SharedKey(SecretSource::Env(
            "OFFSITE_TEST_AZURE_KEY_THAT_IS_NOT_SET".into(),
        ))),
    );
    let err = b.probe().await.expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(
        err.to_string()
            .contains("OFFSITE_TEST_AZURE_KEY_THAT_IS_NOT_SET"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_a_configuration_error() {
    let mut o = shared_key();
    o.container = "no-such-container".into();
    let err = AzureBackend::new("blob", o)
        .probe()
        .await
        .expect_err("no container");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("no-such-container"), "{err}");
}

/// Blocks are staged under our own ids (the service lists them as
/// uncommitted), and when they are gone (they expire after seven days)
/// completion says NotFound, so the caller sends the volume again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_blocks_make_completion_not_found() {
    let b = AzureBackend::new("azure", shared_key());
    let key = format!("{}/vol-000000.tar.zst", common::unique("expired"));
    let body = pattern(300_000, 5);
    let id = b.create_upload(&key, 100_000).await.expect("create");
    let mut receipts = Vec::new();
    for (index, chunk) in body.chunks(100_000).enumerate() {
        let part = Part {
            index: index as u32,
            offset: index as u64 * 100_000,
            body: Bytes::copy_from_slice(chunk),
        };
        receipts.push(b.put_part(&key, &id, part).await.expect("part"));
    }
    assert_eq!(admin(&["blocks", CONFORMANCE, &key]), "3 0");

    admin(&["discard", CONFORMANCE, &key]);
    assert_eq!(admin(&["blocks", CONFORMANCE, &key]), "0 0");
    let err = b
        .complete_upload(&key, &id, &receipts)
        .await
        .expect_err("the blocks are gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(list_all(&b, &key).await.expect("list").is_empty());
}

/// An Archive volume cannot be read; prepare_read asks for its rehydration
/// once and answers Pending; once rehydrated it reads back whole. (Azurite
/// rehydrates at once, so the second call already finds it Hot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_blob_is_read_after_rehydration() {
    let mut o = shared_key();
    o.access_tier = Some("Archive".into());
    let b = AzureBackend::new("azure", o);
    assert!(b.capabilities().cold_storage);
    let key = format!("{}/vol-000000.tar.zst", common::unique("archive"));
    let body = pattern(200_000, 6);
    upload(&b, &key, &body, 64 * 1024).await;
    assert!(admin(&["tier", CONFORMANCE, &key]).starts_with("Archive"));

    let err = get_bytes(&b, &key).await.expect_err("archived");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("rehydrated"), "{err}");

    match b.prepare_read(&key).await.expect("prepare_read") {
        Readiness::Pending {
            requested,
            detail,
            expected,
        } => {
            assert!(requested, "the first call asks for the rehydration");
            assert!(detail.contains("Archive"), "{detail}");
            assert_eq!(expected, Some(Duration::from_secs(15 * 3600)));
        }
        Readiness::Ready => panic!("an Archive blob is not ready"),
    }
    assert!(admin(&["tier", CONFORMANCE, &key]).starts_with("Hot"));
    assert_eq!(
        b.prepare_read(&key).await.expect("prepare_read"),
        Readiness::Ready
    );
    assert!(get_bytes(&b, &key).await.expect("get") == body);

    // A manifest (put) is never archived.
    let manifest = format!("{key}.manifest");
    b.put(&manifest, Bytes::from_static(b"{}"))
        .await
        .expect("put");
    assert!(admin(&["tier", CONFORMANCE, &manifest]).starts_with("Hot"));
    assert_eq!(
        b.prepare_read(&manifest).await.expect("ready"),
        Readiness::Ready
    );
}

/// abort_upload drops staged blocks but never a finished blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_never_touches_a_finished_blob() {
    let b = AzureBackend::new("azure", shared_key());
    let key = format!("{}/done.bin", common::unique("abort_done"));
    let body = pattern(1000, 8);
    upload(&b, &key, &body, 1000).await;
    let stale = b.create_upload(&key, 1000).await.expect("create");
    b.abort_upload(&key, &stale).await.expect("abort");
    assert!(get_bytes(&b, &key).await.expect("still there") == body);
}
