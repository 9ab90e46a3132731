//! The conformance suite on the `path` backend, against a real folder.

use std::sync::Arc;

use offsite_backends::conformance::Fixture;
use offsite_backends::path::PathBackend;
use offsite_backends::{Backend, ErrorKind};

fn fixture(test: &str) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("offsite-path-conformance-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
        .keep();
    Fixture {
        connect: Box::new(move || {
            Arc::new(PathBackend::new("nas", dir.clone())) as Arc<dyn Backend>
        }),
        prefix: format!("conformance/{test}"),
    }
}

offsite_backends::conformance_tests!(|test_name| fixture(test_name); parts, out_of_order);
// `conformance::writes_without_permission_are_denied` is not run here: `make
// test` runs as root (sshd needs it), and file modes do not stop root.

#[tokio::test]
async fn absent_mount_point_is_an_error_and_never_created() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("not-mounted");
    let b = PathBackend::new("nas", &root);
    let err = b.probe().await.expect_err("probe of a missing root");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    let err = b
        .put("job/x/manifest.json", bytes::Bytes::from_static(b"{}"))
        .await
        .expect_err("put under a missing root");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("destination \"nas\""), "{err}");
    assert!(err.to_string().contains("mount"), "{err}");
    assert!(!root.exists(), "the root must never be created");
}

#[tokio::test]
async fn partial_files_are_hidden_and_a_repeated_completion_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = PathBackend::new("nas", dir.path());
    let id = b.create_upload("j/v", 4).await.expect("create");
    let r = b
        .put_part(
            "j/v",
            &id,
            offsite_backends::Part {
                index: 0,
                offset: 0,
                body: bytes::Bytes::from_static(b"abcd"),
            },
        )
        .await
        .expect("part");
    assert!(
        offsite_backends::list_all(&b, "j/")
            .await
            .expect("list")
            .is_empty()
    );
    b.complete_upload("j/v", &id, std::slice::from_ref(&r))
        .await
        .expect("complete");
    // A lost answer to complete: doing it again says the upload is gone (the
    // caller then finds the object there is its own), and changes nothing.
    let err = b
        .complete_upload("j/v", &id, &[r])
        .await
        .expect_err("complete again");
    assert_eq!(err.kind(), offsite_backends::ErrorKind::NotFound, "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("j/v")).expect("read"),
        b"abcd"
    );
}

/// A share unmounted between two parts is a configuration error, not an
/// upload gone: the journal keeps the parts already sent, and the upload
/// resumes once the share is back.
#[tokio::test]
async fn a_share_gone_mid_upload_keeps_the_upload() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("share");
    std::fs::create_dir(&root).expect("mkdir");
    let b = PathBackend::new("nas", &root);
    let id = b.create_upload("j/v", 2).await.expect("create");
    let part = |index: u32, body: &'static [u8]| offsite_backends::Part {
        index,
        offset: u64::from(index) * 2,
        body: bytes::Bytes::from_static(body),
    };
    let first = b
        .put_part("j/v", &id, part(0, b"ab"))
        .await
        .expect("part 0");
    let away = parent.path().join("unmounted");
    std::fs::rename(&root, &away).expect("unmount");
    let err = b
        .put_part("j/v", &id, part(1, b"cd"))
        .await
        .expect_err("part 1 without the share");
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    std::fs::rename(&away, &root).expect("mount again");
    let second = b
        .put_part("j/v", &id, part(1, b"cd"))
        .await
        .expect("part 1");
    b.complete_upload("j/v", &id, &[first, second])
        .await
        .expect("complete");
    assert_eq!(std::fs::read(root.join("j/v")).expect("read"), b"abcd");
}
