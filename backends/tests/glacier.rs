//! The conformance suite on the `glacier` backend, against moto's Glacier
//! vault API (the second moto `tests/servers/moto.sh start` runs, as
//! `make test` does), plus what only a vault has: the catalog, its copy on
//! the vault, its rebuild from an inventory, and retrieval jobs.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use offsite_backends::aws::StaticCredentials;
use offsite_backends::conformance::{Fixture, pattern};
use offsite_backends::glacier::catalog::{Catalog, Described, describe};
use offsite_backends::glacier::{GlacierBackend, GlacierOptions, Rebuild};
use offsite_backends::{Backend, ErrorKind, FileBody, Readiness, Secret, get_bytes, list_all};

fn endpoint() -> String {
    common::server_env("moto.env", "moto.sh")
        .get("MOTO_GLACIER_ENDPOINT")
        .cloned()
        .expect("moto.env has no MOTO_GLACIER_ENDPOINT")
}

/// An SDK client, to make vaults and look behind the backend's back.
fn sdk() -> aws_sdk_glacier::Client {
    let creds = aws_sdk_glacier::config::Credentials::new("test", "test", None, None, "test");
    let conf = aws_sdk_glacier::Config::builder()
        .behavior_version(aws_sdk_glacier::config::BehaviorVersion::latest())
        .region(aws_sdk_glacier::config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(creds)
        .build();
    aws_sdk_glacier::Client::from_conf(conf)
}

/// A new vault, and a catalog folder of its own.
async fn vault(test: &str) -> (String, PathBuf) {
    let name = common::unique(test).replace(['/', '_'], "-");
    let name: String = name
        .chars()
        .rev()
        .take(60)
        .collect::<String>()
        .chars()
        .rev()
        .collect();
    let name = name.trim_start_matches('-').to_string();
    sdk()
        .create_vault()
        .vault_name(&name)
        .send()
        .await
        .expect("create vault");
    let dir = std::env::temp_dir().join(format!("offsite-glacier-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    (name, dir)
}

fn options(vault: &str, catalog_dir: PathBuf) -> GlacierOptions {
    GlacierOptions {
        vault: vault.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint()),
        profile: None,
        credentials: Some(StaticCredentials {
            access_key_id: "test".into(),
            secret_access_key: Secret::new("test"),
        }),
        // moto finishes Expedited jobs in about 2 s.
        retrieval_tier: "Expedited".into(),
        catalog_dir,
        timeout: Duration::from_secs(30),
    }
}

async fn fixture(test: &str) -> Fixture {
    let (name, dir) = vault(test).await;
    Fixture {
        connect: Box::new(move || {
            Arc::new(GlacierBackend::new("vault", options(&name, dir.clone()))) as Arc<dyn Backend>
        }),
        prefix: "db".into(),
    }
}

offsite_backends::conformance_tests!(|test_name| fixture(test_name).await; whole);
// `conformance::writes_without_permission_are_denied` is not run here:
// moto's Glacier server checks no credentials.

/// Waits for `key` to become readable, counting the calls that said Pending.
async fn wait_ready(b: &GlacierBackend, key: &str) -> Vec<bool> {
    let mut requested = Vec::new();
    for _ in 0..60 {
        match b.prepare_read(key).await.expect("prepare_read") {
            Readiness::Ready => return requested,
            Readiness::Pending { requested: r, .. } => requested.push(r),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{key}: no retrieval finished in 30 s");
}

async fn read(b: &GlacierBackend, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut s = b.get(key, range).await.expect("get");
    let mut out = Vec::new();
    while let Some(c) = s.try_next().await.expect("read") {
        out.extend_from_slice(&c);
    }
    out
}

fn staged(dir: &std::path::Path, data: &[u8]) -> FileBody {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join(format!("vol-{}", data.len()));
    std::fs::write(&path, data).expect("write");
    FileBody::new(path, data.len() as u64)
}

/// A volume needs a retrieval job: Pending (requested) once, Pending (not
/// requested again) while it runs, then Ready; the whole read and a range
/// both come from the job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_read_through_retrieval_jobs() {
    let (name, dir) = vault("retrieval").await;
    let b = GlacierBackend::new("vault", options(&name, dir.clone()));
    let data = pattern(3 << 20, 21);
    let key = "db/j/1/vol-000000.tar.zst";
    b.put_file(key, staged(&dir.join("stage"), &data))
        .await
        .expect("put_file");
    let err = b.get(key, None).await.err().expect("get before retrieval");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("exit 4"), "{err}");
    let calls = wait_ready(&b, key).await;
    assert_eq!(calls.first(), Some(&true), "the first call starts the job");
    assert!(calls[1..].iter().all(|r| !r), "one job only: {calls:?}");
    assert_eq!(read(&b, key, None).await, data);
    assert_eq!(
        read(&b, key, Some(1_000_000..1_300_000)).await,
        &data[1_000_000..1_300_000]
    );
    // A job output whose tree hash is not the recorded one fails at its end.
    let file = dir.join("catalog.json");
    let mut c: Catalog =
        serde_json::from_slice(&std::fs::read(&file).expect("catalog")).expect("json");
    c.archives[0].tree_hash = "00".repeat(32);
    std::fs::write(&file, serde_json::to_vec(&c).expect("json")).expect("write");
    let mut s = b.get(key, None).await.expect("get");
    let mut last = Ok(());
    while let Some(item) = s.next().await {
        if let Err(e) = item {
            last = Err(e);
            break;
        }
    }
    let err = last.expect_err("a wrong tree hash");
    assert_eq!(err.kind(), ErrorKind::Precondition, "{err}");
}

/// A kept manifest copy that changed on disk is refused, not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_kept_copy_is_refused() {
    let (name, dir) = vault("damaged").await;
    let b = GlacierBackend::new("vault", options(&name, dir.clone()));
    b.put("db/j/1/manifest.json", Bytes::from_static(b"{\"id\":1}"))
        .await
        .expect("put");
    let objects = dir.join("objects");
    let kept = std::fs::read_dir(&objects)
        .expect("objects")
        .next()
        .expect("one kept copy")
        .expect("entry")
        .path();
    std::fs::write(&kept, b"{\"id\":2}").expect("damage");
    let err = get_bytes(&b, "db/j/1/manifest.json")
        .await
        .expect_err("damaged copy");
    assert_eq!(err.kind(), ErrorKind::Precondition, "{err}");
    assert!(err.to_string().contains("tree hash"), "{err}");
}

/// The output of a job with `params`, once moto has finished it.
async fn run_job(vault: &str, params: aws_sdk_glacier::types::JobParameters) -> Vec<u8> {
    let c = sdk();
    let job = c
        .initiate_job()
        .vault_name(vault)
        .job_parameters(params)
        .send()
        .await
        .expect("initiate job");
    let id = job.job_id().expect("job id").to_string();
    for _ in 0..60 {
        let d = c
            .describe_job()
            .vault_name(vault)
            .job_id(&id)
            .send()
            .await
            .expect("describe");
        if d.completed() {
            let out = c
                .get_job_output()
                .vault_name(vault)
                .job_id(&id)
                .send()
                .await
                .expect("output");
            return out
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no job output in 30 s");
}

/// The vault's archives as an inventory job reports them: (description, id).
async fn inventory(vault: &str) -> Vec<(String, String)> {
    let params = aws_sdk_glacier::types::JobParameters::builder()
        .r#type("inventory-retrieval")
        .tier("Expedited")
        .build();
    let v: serde_json::Value = serde_json::from_slice(&run_job(vault, params).await).expect("json");
    v["ArchiveList"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| {
            (
                a["ArchiveDescription"].as_str().unwrap_or("").to_string(),
                a["ArchiveId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// After a run, the catalog goes to the vault as an archive of its own;
/// the next copy replaces it; and the copy lists what the catalog lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_shipped_and_replaced() {
    let (name, dir) = vault("shipped").await;
    let b = GlacierBackend::new("vault", options(&name, dir.clone()));
    b.put("db/j/1/manifest.json", Bytes::from_static(b"one"))
        .await
        .expect("put");
    b.flush().await.expect("flush");
    b.flush()
        .await
        .expect("a flush with nothing new ships nothing");
    let catalog_desc = describe(&Described::Catalog).expect("describe");
    let copies = |inv: &[(String, String)]| inv.iter().filter(|(d, _)| *d == catalog_desc).count();
    assert_eq!(copies(&inventory(&name).await), 1);
    b.put("db/j/2/manifest.json", Bytes::from_static(b"two"))
        .await
        .expect("put");
    b.flush().await.expect("flush");
    let inv = inventory(&name).await;
    assert_eq!(copies(&inv), 1, "the older copy is deleted: {inv:?}");
    let local: Catalog =
        serde_json::from_slice(&std::fs::read(dir.join("catalog.json")).expect("catalog"))
            .expect("json");
    let copy_id = &local.copies.last().expect("a copy").id;
    let shipped = retrieve_raw(&name, copy_id).await;
    let shipped: Catalog = serde_json::from_slice(&shipped).expect("the copy is a catalog");
    assert_eq!(shipped.list("db/"), local.list("db/"));
    assert!(shipped.retrievals.is_empty() && shipped.inventory_job.is_none());
}

/// The bytes of archive `id`, through an Expedited retrieval job.
async fn retrieve_raw(vault: &str, id: &str) -> Vec<u8> {
    let params = aws_sdk_glacier::types::JobParameters::builder()
        .r#type("archive-retrieval")
        .archive_id(id)
        .tier("Expedited")
        .build();
    run_job(vault, params).await
}

/// The catalog is lost: list says how to rebuild it; the rebuild takes an
/// inventory job, then retrieval jobs for the manifests, and ends with the
/// same listing and readable manifests. An archive offsite did not write is
/// counted and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_catalog_is_rebuilt_from_an_inventory() {
    let (name, dir) = vault("rebuild").await;
    let b = GlacierBackend::new("vault", options(&name, dir.clone()));
    // At most 1 MiB: moto's inventory gives the plain SHA-256 for the tree
    // hash, which is the same only up to one tree-hash chunk.
    let vol = pattern(1 << 20, 31);
    b.put_file(
        "db/j/1/vol-000000.tar.zst",
        staged(&dir.join("stage"), &vol),
    )
    .await
    .expect("put_file");
    b.put("db/j/1/manifest.json", Bytes::from_static(b"manifest one"))
        .await
        .expect("put");
    b.put("db/j/2/manifest.json", Bytes::from_static(b"manifest two"))
        .await
        .expect("put");
    b.flush().await.expect("flush");
    let before = list_all(&b, "db/").await.expect("list");
    sdk()
        .upload_archive()
        .vault_name(&name)
        .archive_description("photos 2019")
        .body(aws_sdk_glacier::primitives::ByteStream::from_static(
            b"not ours",
        ))
        .send()
        .await
        .expect("a foreign archive");

    std::fs::remove_dir_all(&dir).expect("lose the catalog");
    let b = GlacierBackend::new("vault", options(&name, dir.clone()));
    let err = list_all(&b, "db/")
        .await
        .expect_err("list without a catalog");
    assert!(
        err.to_string().contains("offsite glacier inventory"),
        "{err}"
    );

    let first = b.rebuild_catalog().await.expect("rebuild");
    assert!(
        matches!(
            first,
            Rebuild::InventoryPending {
                requested: true,
                ..
            }
        ),
        "{first:?}"
    );
    let mut steps = vec![first];
    let done = loop {
        assert!(steps.len() < 80, "no rebuild in 40 s: {steps:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        match b.rebuild_catalog().await.expect("rebuild") {
            Rebuild::Done { count } => break count,
            other => steps.push(other),
        }
    };
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Rebuild::ManifestsPending { waiting: 2, .. })),
        "the two manifests were retrieved: {steps:?}"
    );
    assert_eq!(
        (done.keys, done.copies, done.foreign),
        (3, 1, 1),
        "{done:?}"
    );
    assert_eq!(list_all(&b, "db/").await.expect("list"), before);
    assert_eq!(
        get_bytes(&b, "db/j/2/manifest.json").await.expect("get"),
        b"manifest two"
    );
    wait_ready(&b, "db/j/1/vol-000000.tar.zst").await;
    assert_eq!(read(&b, "db/j/1/vol-000000.tar.zst", None).await, vol);
    // Deleting everything offsite wrote leaves the foreign archive.
    for o in list_all(&b, "db/").await.expect("list") {
        b.delete(&o.key).await.expect("delete");
    }
    let inv = inventory(&name).await;
    assert!(inv.iter().any(|(d, _)| d == "photos 2019"), "{inv:?}");
    assert!(
        !inv.iter()
            .any(|(d, _)| d.starts_with("offsite:v1:s:") || d.starts_with("offsite:v1:f:")),
        "{inv:?}"
    );
}

/// A vault that does not exist is a configuration error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_vault_is_named() {
    let dir = std::env::temp_dir().join("offsite-glacier-missing");
    let b = GlacierBackend::new("vault", options("no-such-vault", dir));
    let err = b.probe().await.expect_err("probe");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("no-such-vault"), "{err}");
}
