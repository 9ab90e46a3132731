//! The conformance suite on the `s3` backend, against moto's S3 server with
//! IAM enforced (started by `tests/servers/moto.sh start`, as `make test`
//! does), plus what only S3 has: put-only credentials.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use offsite_backends::conformance::{Fixture, pattern};
use offsite_backends::s3::{S3Backend, S3Options, StaticCredentials};
use offsite_backends::{Backend, Checked, ErrorKind, Part, Readiness, Secret};

/// The server's address and the users' keys, from `target/servers/moto.env`.
fn moto_env() -> HashMap<String, String> {
    common::server_env("moto.env", "moto.sh")
}

fn var(env: &HashMap<String, String>, key: &str) -> String {
    env.get(key)
        .unwrap_or_else(|| panic!("moto.env has no {key}"))
        .clone()
}

/// A backend for `user` (admin, uploader, pruner, restorer).
pub fn backend(user: &str, put_only: bool, storage_class: Option<&str>) -> S3Backend {
    let env = moto_env();
    let upper = user.to_uppercase();
    S3Backend::new(
        "s3",
        S3Options {
            bucket: var(&env, "MOTO_BUCKET"),
            region: "us-east-1".into(),
            endpoint: Some(var(&env, "MOTO_ENDPOINT")),
            storage_class: storage_class.map(str::to_string),
            put_only,
            profile: None,
            restore_tier: "Standard".into(),
            restore_days: 1,
            timeout: std::time::Duration::from_secs(30),
            object_lock: None,
            credentials: Some(StaticCredentials {
                access_key_id: var(&env, &format!("MOTO_{upper}_ACCESS_KEY_ID")),
                secret_access_key: Secret::new(var(
                    &env,
                    &format!("MOTO_{upper}_SECRET_ACCESS_KEY"),
                )),
            }),
        },
    )
}

/// An SDK client with the admin key, to look behind the backend's back.
fn admin_client() -> aws_sdk_s3::Client {
    let env = moto_env();
    let creds = aws_sdk_s3::config::Credentials::new(
        var(&env, "MOTO_ADMIN_ACCESS_KEY_ID"),
        var(&env, "MOTO_ADMIN_SECRET_ACCESS_KEY"),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(var(&env, "MOTO_ENDPOINT"))
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The storage class S3 reports for `key` (HeadObject: the Backend trait
/// has no such call).
async fn storage_class(key: &str) -> Option<String> {
    let env = moto_env();
    let head = admin_client()
        .head_object()
        .bucket(var(&env, "MOTO_BUCKET"))
        .key(key)
        .send()
        .await
        .expect("HeadObject with the admin key");
    head.storage_class().map(|c| c.as_str().to_string())
}

fn fixture(test: &str) -> Fixture {
    Fixture {
        connect: Box::new(|| Arc::new(backend("admin", false, None)) as Arc<dyn Backend>),
        prefix: common::unique(test),
    }
}

offsite_backends::conformance_tests!(|test_name| fixture(test_name); parts, out_of_order);

/// The restorer's key may list and read, not write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_permission_are_denied() {
    let f = fixture("writes_without_permission_are_denied");
    let denied = Arc::new(backend("restorer", false, None));
    offsite_backends::conformance::writes_without_permission_are_denied(&f, denied).await;
}

/// The checksum a part's receipt carries (`"<etag> <base64>"`).
fn receipt_checksum(tag: &str) -> &str {
    tag.rsplit_once(' ').map(|(_, sum)| sum).unwrap_or("")
}

/// New uploads use CRC32C part checksums and say so in their upload id; an
/// upload an earlier version started with SHA-256 (its journaled id has no
/// mark) gets SHA-256 for its remaining parts and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_uploads_use_crc32c_and_an_earlier_sha256_upload_still_completes() {
    let env = moto_env();
    let b = backend("admin", false, None);
    let prefix = common::unique("checksums");
    let body = Bytes::from(pattern(6 << 20, 7));
    // Sends `body` to `upload` of `key` in a 5 MiB and a 1 MiB part and
    // completes it; each receipt's checksum is `len` base64 characters.
    let send = |key: String, upload: offsite_backends::UploadId, len: usize| {
        let (b, body) = (&b, body.clone());
        async move {
            let mut receipts = Vec::new();
            for (index, range) in [(0u32, 0..5 << 20), (1, 5 << 20..6 << 20)] {
                let part = Part {
                    index,
                    offset: range.start as u64,
                    body: body.slice(range),
                };
                let r = b.put_part(&key, &upload, part).await.expect("put_part");
                assert_eq!(receipt_checksum(&r.tag).len(), len, "{r:?}");
                receipts.push(r);
            }
            b.complete_upload(&key, &upload, &receipts)
                .await
                .expect("complete");
        }
    };

    // A CRC32C is 4 bytes: 8 characters of base64.
    let new_key = format!("{prefix}/new");
    let upload = b.create_upload(&new_key, 5 << 20).await.expect("create");
    assert!(upload.0.starts_with("crc32c:"), "{upload:?}");
    send(new_key.clone(), upload, 8).await;

    // A SHA-256 is 32 bytes: 44 characters of base64.
    let old_key = format!("{prefix}/old");
    let created = admin_client()
        .create_multipart_upload()
        .bucket(var(&env, "MOTO_BUCKET"))
        .key(&old_key)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("CreateMultipartUpload with SHA-256, as earlier versions did");
    let upload = offsite_backends::UploadId(created.upload_id().expect("id").to_string());
    send(old_key.clone(), upload, 44).await;

    for key in [&new_key, &old_key] {
        let got = offsite_backends::get_bytes(&b, key).await.expect("get");
        assert!(got == body, "{key} reads back as written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_only_credentials_upload_and_nothing_else() {
    // Checked, as the application stacks it: it refuses what put_only rules out.
    let up = Checked::new(Arc::new(backend("uploader", true, Some("STANDARD_IA"))));
    let key = format!("{}/vol-000000.tar.zst", common::unique("put_only"));
    let caps = up.capabilities();
    assert!(!caps.list && !caps.read && !caps.delete);
    up.probe().await.expect("a put-only probe makes no call");

    // The four calls of a backup, under a policy that allows only s3:PutObject.
    let id = up.create_upload(&key, 5 << 20).await.expect("create");
    let body = pattern((5 << 20) + 1234, 3);
    let mut receipts = Vec::new();
    for (index, chunk) in body.chunks(5 << 20).enumerate() {
        let part = Part {
            index: index as u32,
            offset: (index * (5 << 20)) as u64,
            body: Bytes::copy_from_slice(chunk),
        };
        receipts.push(up.put_part(&key, &id, part).await.expect("part"));
    }
    up.complete_upload(&key, &id, &receipts)
        .await
        .expect("complete");
    up.put(&format!("{key}.manifest"), Bytes::from_static(b"{}"))
        .await
        .expect("put");

    // Everything else is refused before any request, naming the policy to use.
    let err = up.list("conformance/").await.err().expect("list refused");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("put_only"), "{err}");
    assert!(err.to_string().contains("s3:ListBucket"), "{err}");
    assert!(up.get(&key, None).await.is_err());
    assert!(up.delete(&key).await.is_err());

    // The object is whole, and in the storage class asked for (read with the admin key).
    let admin = backend("admin", false, None);
    let back = offsite_backends::get_bytes(&admin, &key)
        .await
        .expect("get");
    assert!(back == body, "the object reads back as sent");
    assert_eq!(storage_class(&key).await.as_deref(), Some("STANDARD_IA"));
    // A manifest (put) stays in STANDARD, which S3 reports as no class at all.
    let manifest_class = storage_class(&format!("{key}.manifest")).await;
    assert!(
        manifest_class.is_none() || manifest_class.as_deref() == Some("STANDARD"),
        "{manifest_class:?}"
    );

    // Without put_only, the same put-only key is refused by the server: the policy is real.
    let denied = backend("uploader", false, None);
    let err = denied.list("conformance/").await.expect("a stream");
    let first = futures::StreamExt::next(&mut Box::pin(err)).await;
    assert!(matches!(first, Some(Err(_))), "ListObjects must be denied");
    let err = offsite_backends::get_bytes(&denied, &key)
        .await
        .expect_err("GetObject denied");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_unauthenticated_and_never_printed() {
    let env = moto_env();
    let secret = "wrong-secret-do-not-print-0123456789";
    let b = S3Backend::new(
        "s3",
        S3Options {
            bucket: var(&env, "MOTO_BUCKET"),
            region: "us-east-1".into(),
            endpoint: Some(var(&env, "MOTO_ENDPOINT")),
            storage_class: None,
            put_only: false,
            profile: None,
            restore_tier: "Standard".into(),
            restore_days: 1,
            timeout: std::time::Duration::from_secs(30),
            object_lock: None,
            credentials: Some(StaticCredentials {
                access_key_id: var(&env, "MOTO_ADMIN_ACCESS_KEY_ID"),
                secret_access_key: Secret::new(secret),
            }),
        },
    );
    let err = b
        .put("conformance/wrong-secret", Bytes::from_static(b"x"))
        .await
        .expect_err("a wrong secret is refused");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{text}");
    assert!(text.contains("destination \"s3\""), "{text}");
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{b:?}").contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glacier_object_is_read_only_after_restore_object() {
    let key = format!("{}/vol-000000.tar.zst", common::unique("glacier"));
    let cold = backend("admin", false, Some("GLACIER"));
    let body = pattern(300_000, 9);
    let id = cold.create_upload(&key, 5 << 20).await.expect("create");
    let part = Part {
        index: 0,
        offset: 0,
        body: Bytes::from(body.clone()),
    };
    let receipt = cold.put_part(&key, &id, part).await.expect("part");
    cold.complete_upload(&key, &id, &[receipt])
        .await
        .expect("complete");
    assert_eq!(storage_class(&key).await.as_deref(), Some("GLACIER"));

    // Cold: a plain read is refused, with a hint that says how to get it back.
    let restorer = backend("restorer", false, None);
    let err = offsite_backends::get_bytes(&restorer, &key)
        .await
        .expect_err("GetObject of a GLACIER object");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("exit 4"), "{err}");

    // The first prepare_read asks for the retrieval (RestoreObject, restorer's key).
    match restorer.prepare_read(&key).await.expect("prepare_read") {
        Readiness::Pending {
            requested,
            detail,
            expected,
        } => {
            assert!(requested, "the first call requests the retrieval");
            assert_eq!(detail, "GLACIER, Standard tier");
            assert_eq!(expected, Some(std::time::Duration::from_secs(5 * 3600)));
        }
        Readiness::Ready => panic!("a GLACIER object is not readable before RestoreObject"),
    }
    // Later calls never request it again; moto finishes the retrieval at once.
    let mut ready = false;
    for _ in 0..10 {
        match restorer.prepare_read(&key).await.expect("prepare_read") {
            Readiness::Ready => {
                ready = true;
                break;
            }
            Readiness::Pending { requested, .. } => assert!(!requested, "requested twice"),
        }
    }
    assert!(ready, "the retrieval never finished");
    let back = offsite_backends::get_bytes(&restorer, &key)
        .await
        .expect("GetObject after the retrieval");
    assert!(back == body, "the retrieved object reads back as sent");

    // A warm object needs nothing: Ready, without RestoreObject.
    let warm = format!("{key}.manifest");
    cold.put(&warm, Bytes::from_static(b"{}"))
        .await
        .expect("put");
    assert_eq!(
        restorer.prepare_read(&warm).await.expect("prepare_read"),
        Readiness::Ready
    );
    // A put-only destination refuses before any request.
    let up = Checked::new(Arc::new(backend("uploader", true, None)));
    let err = up.prepare_read(&key).await.expect_err("put_only");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
}
