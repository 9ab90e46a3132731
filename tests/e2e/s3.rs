//! The S3 destination end to end, against moto's S3 server with IAM
//! enforced (`tests/servers/moto.sh start`; `make test` starts it): a backup
//! with put-only credentials killed mid-upload and resumed, an upload that
//! vanished from the server restarted, a restore with the restorer's key, and
//! a wrong key that fails only its own destination.

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

pub(crate) fn moto() -> HashMap<String, String> {
    crate::remote::server_env("moto.env", "moto.sh")
}

/// The AWS chain's variables for one of moto's users.
fn as_user(c: Command, user: &str) -> Command {
    let m = moto();
    let u = user.to_uppercase();
    with_keys(
        c,
        &m[&format!("MOTO_{u}_ACCESS_KEY_ID")],
        &m[&format!("MOTO_{u}_SECRET_ACCESS_KEY")],
    )
}

/// The AWS chain's variables for one access key, and nothing else of the chain.
fn with_keys(mut c: Command, id: &str, secret: &str) -> Command {
    c.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    c
}

fn run_as(sb: &Sandbox, user: &str, args: &[&str]) -> Run {
    let out = as_user(sb.command(args), user)
        .output()
        .expect("run offsite");
    Run::from(out)
}

/// A `[destination.s3]` table on moto's bucket, under a prefix of this test's own.
pub(crate) fn s3_table(sb: &Sandbox, extra: &str) -> String {
    let m = moto();
    let test = sb.root.file_name().and_then(|n| n.to_str()).unwrap_or("t");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "[destination.s3]\nkind = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nprefix = \"e2e/{test}-{nonce}\"\npart_size = \"5MiB\"\n{extra}\n",
        m["MOTO_BUCKET"], m["MOTO_ENDPOINT"]
    )
}

/// A backend with moto's admin key, to look behind offsite's back.
fn admin_backend() -> offsite_backends::s3::S3Backend {
    let m = moto();
    offsite_backends::s3::S3Backend::new(
        "admin",
        offsite_backends::s3::S3Options {
            bucket: m["MOTO_BUCKET"].clone(),
            region: "us-east-1".into(),
            endpoint: Some(m["MOTO_ENDPOINT"].clone()),
            storage_class: None,
            put_only: false,
            profile: None,
            restore_tier: "Standard".into(),
            restore_days: 1,
            timeout: std::time::Duration::from_secs(30),
            object_lock: None,
            credentials: Some(offsite_backends::s3::StaticCredentials {
                access_key_id: m["MOTO_ADMIN_ACCESS_KEY_ID"].clone(),
                secret_access_key: offsite_backends::Secret::new(
                    m["MOTO_ADMIN_SECRET_ACCESS_KEY"].clone(),
                ),
            }),
        },
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// While alive, moto keeps every S3 Glacier retrieval "in progress" for a
/// few lookups of the object instead of finishing it at once (its state
/// manager; see tests/servers/README.md). Undone on drop, even on a panic.
struct SlowRetrievals;

impl SlowRetrievals {
    fn new(lookups: u32) -> SlowRetrievals {
        moto_api(
            "set-transition",
            &format!(
                r#"{{"model_name": "s3::keyrestore", "transition": {{"progression": "manual", "times": {lookups}}}}}"#
            ),
        );
        SlowRetrievals
    }
}

impl Drop for SlowRetrievals {
    fn drop(&mut self) {
        moto_api("unset-transition", r#"{"model_name": "s3::keyrestore"}"#);
    }
}

fn moto_api(call: &str, body: &str) {
    let url = format!("{}/moto-api/state-manager/{call}", moto()["MOTO_ENDPOINT"]);
    let status = Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "--data-binary",
            body,
            &url,
        ])
        .status()
        .expect("curl");
    assert!(status.success(), "POST {url} {body}");
}

fn throttled_put_only_backup(sb: &Sandbox) -> String {
    write(&sb.path("src/chunk-000000.000000"), &noise(12 << 20, 21));
    write(&sb.path("src/writer.chk"), b"0000000000000042");
    let table = s3_table(
        sb,
        "put_only = true\nstorage_class = \"STANDARD_IA\"\nbwlimit = \"4MiB\"",
    );
    // Several volumes, of one or two parts each.
    sb.config_dir_job("volume_size = \"6MiB\"", &["s3"], &table);
    let mut child = as_user(sb.command(&["--json", "backup"]), "uploader")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start backup");
    wait_for("a part to be journaled", Duration::from_secs(60), || {
        journaled(sb, "s3").0 >= 1
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    table
}

/// The config the restore host uses: the same bucket and prefix, put_only off.
fn restore_config(sb: &Sandbox, table: &str) {
    let readable = table
        .replace("put_only = true\n", "")
        .replace("bwlimit = \"4MiB\"", "");
    sb.config_dir_job("volume_size = \"6MiB\"", &["s3"], &readable);
}

/// Restores the latest backup with the restorer's key; it must equal `src/`.
fn restore_as_restorer(sb: &Sandbox) {
    crate::remote::restores_the_source(sb, |args| run_as(sb, "restorer", args));
}

#[test]
fn a_put_only_backup_killed_mid_upload_resumes_and_the_restorer_restores_it() {
    let sb =
        Sandbox::new("a_put_only_backup_killed_mid_upload_resumes_and_the_restorer_restores_it");
    let table = throttled_put_only_backup(&sb);
    let (_, journaled_bytes) = journaled(&sb, "s3");

    // Resuming needs nothing but the journal: under a policy that allows only
    // s3:PutObject, any ListParts or HeadObject would be denied.
    let r = run_as(&sb, "uploader", &["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    let dest = &r.json()["runs"][0]["destinations"][0];
    assert_eq!(dest["status"], "ok", "{r:?}");
    assert_eq!(
        dest["bytes_resumed"].as_u64(),
        Some(journaled_bytes),
        "{r:?}"
    );

    // The put-only host cannot list, and says which policy it would need.
    let r = run_as(&sb, "uploader", &["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("put_only") && all.contains("s3:ListBucket"),
        "{r:?}"
    );

    // The restore host lists, verifies and restores with its own key.
    restore_config(&sb, &table);
    let r = run_as(&sb, "restorer", &["--json", "list"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json()["listings"][0]["backups"].as_array().map(Vec::len),
        Some(1),
        "{r:?}"
    );
    let r = run_as(&sb, "restorer", &["--json", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    let volumes = r.json()["verified"][0]["volumes"].as_u64();
    assert!(
        volumes.is_some_and(|v| v >= 2),
        "a multi-volume backup: {r:?}"
    );
    restore_as_restorer(&sb);
}

#[test]
fn an_upload_gone_from_the_server_restarts_that_volume() {
    let sb = Sandbox::new("an_upload_gone_from_the_server_restarts_that_volume");
    let table = throttled_put_only_backup(&sb);

    // Abort the journaled upload behind offsite's back, as a lifecycle rule would.
    let started = fs::read_dir(sb.path("staging/db"))
        .expect("staging")
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join(".journal/s3.jsonl")).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| v["event"] == "started")
        .expect("a started upload in the journal");
    let key = started["key"].as_str().expect("key").to_string();
    let upload = started["upload"].as_str().expect("upload id").to_string();
    let admin = admin_backend();
    block_on(offsite_backends::Backend::abort_upload(
        &admin,
        &key,
        &offsite_backends::UploadId(upload),
    ))
    .expect("abort");

    let r = run_as(&sb, "uploader", &["--json", "upload"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("sending vol-000000.tar.zst again"),
        "{r:?}"
    );

    restore_config(&sb, &table);
    restore_as_restorer(&sb);
}

#[test]
fn a_wrong_secret_fails_its_destination_only_and_is_never_printed() {
    let sb = Sandbox::new("a_wrong_secret_fails_its_destination_only_and_is_never_printed");
    write(&sb.path("src/a.bin"), &noise(100_000, 5));
    let tables = format!(
        "{}[destination.nas]\nkind = \"path\"\npath = \"dest\"\n",
        s3_table(&sb, "")
    );
    sb.config_dir_job("", &["nas", "s3"], &tables);
    let secret = "not-the-secret-0123456789abcdef";
    let m = moto();
    let out = sb
        .command(&["--json", "backup"])
        .env("AWS_ACCESS_KEY_ID", &m["MOTO_ADMIN_ACCESS_KEY_ID"])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let dests = j["destinations"].as_array().expect("destinations");
    let s3 = dests.iter().find(|d| d["name"] == "s3").expect("s3");
    let nas = dests.iter().find(|d| d["name"] == "nas").expect("nas");
    assert_eq!(nas["status"], "ok");
    assert_eq!(s3["status"], "failed");
    let err = s3["error"].as_str().expect("error");
    assert!(err.contains("destination \"s3\""), "{err}");
    assert!(err.contains("check the credentials"), "{err}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let status = fs::read_to_string(sb.path("staging/db/status.json")).expect("status");
    assert!(!status.contains(secret));
}

#[test]
fn missing_credentials_fail_at_once_and_say_how_to_set_them() {
    let sb = Sandbox::new("missing_credentials_fail_at_once_and_say_how_to_set_them");
    write(&sb.path("src/a.bin"), b"a");
    sb.config_dir_job("", &["s3"], &s3_table(&sb, ""));
    // What cron gives a job: no AWS variables, no profile files, no instance role.
    let mut c = sb.command(&["--json", "backup"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    let out = c
        .env("HOME", sb.path("home"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let err = j["destinations"][0]["error"].as_str().expect("error");
    assert!(
        err.contains("no usable AWS credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    // Not retried as if the network had failed.
    assert!(
        j["destinations"][0]["seconds"].as_f64().expect("seconds") < 2.0,
        "{j}"
    );
}

#[test]
fn a_restore_from_glacier_requests_the_retrieval_exits_4_and_completes_later() {
    let sb =
        Sandbox::new("a_restore_from_glacier_requests_the_retrieval_exits_4_and_completes_later");
    write(&sb.path("src/chunk-000000.000000"), &noise(2_500_000, 31));
    write(&sb.path("src/writer.chk"), b"0000000000000007");
    let table = s3_table(&sb, "storage_class = \"GLACIER\"\nrestore_tier = \"Bulk\"");
    sb.config_dir_job("volume_size = \"1MiB\"", &["s3"], &table);
    let r = run_as(&sb, "admin", &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");

    // The volumes really are cold: a plain GetObject is refused.
    let prefix = crate::remote::prefix_of(&table);
    let admin = admin_backend();
    let keys: Vec<String> = block_on(offsite_backends::list_all(&admin, &prefix))
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".tar.zst"))
        .collect();
    assert!(keys.len() >= 2, "a multi-volume backup: {keys:?}");
    let err = block_on(offsite_backends::get_bytes(&admin, &keys[0])).expect_err("cold");
    assert_eq!(
        err.kind(),
        offsite_backends::ErrorKind::Unsupported,
        "{err}"
    );

    let _slow = SlowRetrievals::new(4);
    // verify asks for every volume's retrieval at once, and says when to come back.
    let r = run_as(&sb, "restorer", &["verify"]);
    assert_eq!(r.code, 4, "{r:?}");
    let expected = format!(
        "retrieval requested for {n} of {n} volume(s)",
        n = keys.len()
    );
    assert!(r.stdout.contains(&expected), "{r:?}");
    assert!(
        r.stdout.contains("GLACIER, Bulk tier") && r.stdout.contains("ready in about 12 hours"),
        "{r:?}"
    );
    assert!(r.stdout.contains("run the same command again"), "{r:?}");

    // Only RestoreObject starts a retrieval, and offsite's did: asking again
    // with the admin key finds each one already under way (or done).
    for k in &keys {
        match block_on(offsite_backends::Backend::prepare_read(&admin, k)).expect("head") {
            offsite_backends::Readiness::Pending { requested, .. } => {
                assert!(!requested, "{k}: offsite did not request the retrieval")
            }
            offsite_backends::Readiness::Ready => {}
        }
    }

    // restore exits 4 until the retrievals finish, writing nothing, then restores.
    let to = sb.path("restored");
    let args = [
        "--json",
        "restore",
        "--job",
        "db",
        "--to",
        to.to_str().expect("utf8"),
    ];
    let mut pending_runs = 0;
    let restored = (0..10).any(|_| {
        let r = run_as(&sb, "restorer", &args);
        if r.code == 0 {
            return true;
        }
        assert_eq!(r.code, 4, "{r:?}");
        assert_eq!(r.json()["status"], "pending", "{r:?}");
        assert!(
            !r.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("requested for"),
            "requested twice: {r:?}"
        );
        assert!(!to.exists(), "a pending restore writes nothing");
        pending_runs += 1;
        false
    });
    assert!(restored, "the retrieval never finished");
    assert!(
        pending_runs >= 1,
        "moto was told to keep retrievals pending"
    );
    assert_same_tree(&sb.path("src"), &to);
    let r = run_as(&sb, "restorer", &["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// Runs tests/servers/moto_admin.py with the admin key; its stdout.
fn moto_admin(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/target/servers/venv/bin/python"))
        .arg(format!("{root}/tests/servers/moto_admin.py"))
        .arg(format!("{root}/target/servers/moto.env"))
        .args(args)
        .output()
        .expect("run moto_admin.py");
    assert!(
        out.status.success(),
        "moto_admin.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new IAM user on moto whose only permissions are `policy`; its key and secret.
fn user_with_policy(sb: &Sandbox, name: &str, policy: &serde_json::Value) -> (String, String) {
    let file = sb.path(&format!("{name}.json"));
    write(&file, policy.to_string().as_bytes());
    let out = moto_admin(&["user", name, file.to_str().expect("utf8")]);
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{k} in {out}"))
    };
    (get("ACCESS_KEY_ID="), get("SECRET_ACCESS_KEY="))
}

#[test]
fn the_printed_policies_are_enough_for_each_role_and_no_more() {
    let sb = Sandbox::new("the_printed_policies_are_enough_for_each_role_and_no_more");
    write(&sb.path("src/chunk-000000.000000"), &noise(300_000, 41));
    let table = s3_table(&sb, "");
    let retention = "retention = { keep_daily = 3 }";
    sb.config_dir_job(retention, &["s3"], &table);
    let r = sb.offsite(&["policy", "s3", "--destination", "s3"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    // keep_daily 3, no schedule (a month for a full's chain), a week's margin.
    assert_eq!(
        doc["lifecycle"]["Rules"][0]["Expiration"]["Days"], 41,
        "{r:?}"
    );
    assert!(r.stderr.contains("REPLACES the bucket's rules"), "{r:?}");
    let r = sb.offsite(&["policy", "s3", "--destination", "s3", "--role", "uploader"]);
    assert_eq!(r.json(), doc["uploader"], "{r:?}");

    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let uploader = user_with_policy(&sb, &format!("up-{nonce}"), &doc["uploader"]);
    let pruner = user_with_policy(&sb, &format!("pr-{nonce}"), &doc["pruner"]);
    let restorer = user_with_policy(&sb, &format!("re-{nonce}"), &doc["restorer"]);
    let run = |keys: &(String, String), args: &[&str]| {
        let out = with_keys(sb.command(args), &keys.0, &keys.1)
            .output()
            .expect("run offsite");
        Run::from(out)
    };
    let count = |r: &Run| r.json()["listings"][0]["backups"].as_array().map(Vec::len);

    // The database host, with nothing but s3:PutObject: two fulls, then an
    // incremental whose parent manifest comes from staging (it may not read the bucket).
    sb.config_dir_job(retention, &["s3"], &format!("{table}put_only = true\n"));
    for _ in 0..2 {
        let r = run(&uploader, &["backup"]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    write(&sb.path("src/writer.chk"), b"0000000000000099");
    let r = run(&uploader, &["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");
    // The same key stolen: it cannot replace an existing object, with or
    // without the header offsite sends (AccessDenied by the policy's Deny;
    // 412 from S3); it can only add new ones.
    let id = r.json()["backup"].as_str().expect("id").to_string();
    let victim = format!("{}/db/{id}/manifest.json", crate::remote::prefix_of(&table));
    let m = moto();
    let script = r#"
import sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, bucket, key, kid, secret = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id=kid, aws_secret_access_key=secret,
    config=Config(s3={"addressing_style": "path"}))
def put(k, **extra):
    try:
        s3.put_object(Bucket=bucket, Key=k, Body=b"garbage", **extra)
        return "ok"
    except ClientError as e:
        return e.response["Error"]["Code"]
print(put(key))
print(put(key, IfNoneMatch="*"))
print(put(key + ".new", IfNoneMatch="*"))
"#;
    let out = Command::new(&m["MOTO_PYTHON"])
        .args([
            "-c",
            script,
            &m["MOTO_ENDPOINT"],
            &m["MOTO_BUCKET"],
            &victim,
        ])
        .args([&uploader.0, &uploader.1])
        .output()
        .expect("python");
    let answers = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        answers.lines().collect::<Vec<_>>(),
        ["AccessDenied", "PreconditionFailed", "ok"],
        "{answers}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without put_only the same key is refused by the server, not by offsite.
    sb.config_dir_job(retention, &["s3"], &table);
    let r = run(&uploader, &["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("AccessDenied") || r.stderr.contains("AccessDenied"),
        "{r:?}"
    );

    // The restore host lists, verifies and restores, and cannot delete.
    let r = run(&restorer, &["--json", "list"]);
    assert_eq!(count(&r), Some(3), "{r:?}");
    assert_eq!(run(&restorer, &["verify"]).code, 0);
    let to = sb.path("restored");
    let r = run(
        &restorer,
        &["restore", "--job", "db", "--to", to.to_str().expect("utf8")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&sb.path("src"), &to);
    let r = run(&restorer, &["prune"]);
    assert_eq!(r.code, 1, "the restorer may not delete: {r:?}");

    // The cleanup host prunes: keep_daily keeps today's newest (the
    // incremental) and so its full; the first full goes.
    let r = run(&pruner, &["prune"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&pruner, &["--json", "list"]);
    assert_eq!(count(&r), Some(2), "{r:?}");

    // S3 accepts the lifecycle configuration as printed.
    let file = sb.path("lifecycle.json");
    write(&file, doc["lifecycle"].to_string().as_bytes());
    let stored: serde_json::Value =
        serde_json::from_str(&moto_admin(&["lifecycle", file.to_str().expect("utf8")]))
            .expect("json");
    let rules = stored["Rules"].as_array().expect("rules");
    assert!(
        rules.iter().any(|r| r["Expiration"]["Days"] == 41),
        "{stored}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7),
        "{stored}"
    );
}

/// Encryption with put-only keys: the database host holds only the public
/// key and may only put; what lands in the bucket names no file and holds no
/// row; the restorer restores with the identity.
#[test]
fn an_encrypted_put_only_backup_is_restored_by_the_restorer_with_the_identity() {
    let sb =
        Sandbox::new("an_encrypted_put_only_backup_is_restored_by_the_restorer_with_the_identity");
    let rows: String = (0..3000)
        .map(|i| format!("{i:06} account=bob.private@example.org balance=1000\n"))
        .collect();
    write(&sb.path("src/ledger-secret.db"), rows.as_bytes());
    write(&sb.path("src/chunk-000000.000000"), &noise(1 << 20, 51));
    let key = sb.path("restore.key");
    let r = Run::from(
        Command::new(bin())
            .arg("keygen")
            .arg(&key)
            .output()
            .expect("keygen"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let public = r.stdout.trim().to_string();
    let table = s3_table(&sb, "put_only = true");
    let job = format!("encryption = {{ recipients = [\"{public}\"] }}");
    sb.config_dir_job(&job, &["s3"], &table);
    let r = run_as(&sb, "uploader", &["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Every object in the prefix, read with the admin key: no name, no row.
    let prefix = crate::remote::prefix_of(&table);
    let admin = admin_backend();
    let objects = block_on(offsite_backends::list_all(&admin, &prefix)).expect("list");
    assert!(objects.len() >= 2, "{objects:?}");
    for o in &objects {
        let body = block_on(offsite_backends::get_bytes(&admin, &o.key)).expect("get");
        let text = String::from_utf8_lossy(&body);
        for secret in ["ledger-secret", "bob.private", "chunk-000000"] {
            assert!(
                !text.contains(secret) && !o.key.contains(secret),
                "{secret} in {}",
                o.key
            );
        }
    }

    // The restore host: the restorer's key and the identity.
    let readable = table.replace("put_only = true\n", "");
    let job = format!("encryption = {{ identity_file = \"{}\" }}", key.display());
    sb.config_dir_job(&job, &["s3"], &readable);
    crate::remote::restores_the_source(&sb, |args| run_as(&sb, "restorer", args));
}

/// S3 Object Lock on moto, a bucket of the test's own with it enabled:
/// every object written (a multipart volume, a single-part volume, the
/// manifest) carries the configured lock; retention's delete of a locked
/// backup is reported as retained until its date, not as a failure, and
/// the backup stays whole; a full's lock is extended to cover the
/// incremental that builds on it.
#[test]
fn object_lock_locks_every_object_and_prune_respects_and_extends_it() {
    let sb = Sandbox::new("object_lock_locks_every_object_and_prune_respects_and_extends_it");
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let bucket = format!("locked-{nonce}");
    moto_admin(&["lock-bucket", &bucket]);
    // 12 MiB that does not compress: a volume of 8 MiB (two 5 MiB parts) and one of 4 MiB (one part).
    write(&sb.path("src/chunk-0"), &noise(12 << 20, 61));
    let m = moto();
    let table = s3_table(&sb, "object_lock = { mode = \"governance\", days = 1 }").replace(
        &format!("bucket = \"{}\"", m["MOTO_BUCKET"]),
        &format!("bucket = \"{bucket}\""),
    );
    sb.config_dir_job(
        "volume_size = \"8MiB\"\nretention = { keep_last = 1 }",
        &["s3"],
        &table,
    );
    let run = |args: &[&str]| Run::from(as_user(sb.command(args), "admin").output().expect("run"));
    let locks = || -> Vec<serde_json::Value> {
        let prefix = crate::remote::prefix_of(&table);
        serde_json::from_str(&moto_admin(&["locks", &bucket, &prefix])).expect("json")
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };

    let r = run(&["--json", "backup"]);
    assert_eq!(r.code, 0, "{r:?}");
    let full = r.json()["backup"].as_str().expect("id").to_string();
    let written = locks();
    assert_eq!(
        written.len(),
        3,
        "two volumes and the manifest: {written:?}"
    );
    for o in &written {
        assert_eq!(o["mode"], "GOVERNANCE", "{o}");
        let until = o["until"].as_f64().expect("until");
        assert!(
            (until - now() - 86_400.0).abs() < 300.0,
            "locked for a day from now: {o}"
        );
    }

    // An incremental on the full: the next prune must keep the full locked as long.
    std::thread::sleep(Duration::from_millis(2100));
    write(&sb.path("src/writer.chk"), b"0002");
    let r = run(&["--json", "backup", "--incremental"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "incr", "{r:?}");
    let incr = r.json()["backup"].as_str().expect("id").to_string();
    let prune = &r.json()["prune"][0];
    assert_eq!(prune["status"], "ok", "{r:?}");
    assert_eq!(prune["extended"][0]["id"], full.as_str(), "{r:?}");
    let after = locks();
    let until_of = |id: &str, name: &str| {
        after
            .iter()
            .filter(|o| {
                o["key"]
                    .as_str()
                    .is_some_and(|k| k.ends_with(&format!("{id}/{name}")))
            })
            .map(|o| o["until"].as_f64().expect("until"))
            .fold(0.0, f64::max)
    };
    let incr_until = until_of(&incr, "manifest.json");
    for name in ["manifest.json", "vol-000000.tar.zst", "vol-000001.tar.zst"] {
        assert!(
            until_of(&full, name) >= incr_until,
            "{name} of the full is locked as long as the incremental: {after:?}"
        );
    }

    // A new full: keep_last = 1 deletes the old chain, which is still locked.
    std::thread::sleep(Duration::from_millis(1100));
    let r = run(&["--json", "backup", "--full"]);
    assert_eq!(r.code, 0, "a lock is not a failure: {r:?}");
    let prune = &r.json()["prune"][0];
    let retained: Vec<&str> = prune["retained"]
        .as_array()
        .expect("retained")
        .iter()
        .map(|x| x["id"].as_str().expect("id"))
        .collect();
    assert!(
        retained.contains(&full.as_str()) && retained.contains(&incr.as_str()),
        "{r:?}"
    );
    assert!(
        prune["retained"][0]["until"]
            .as_str()
            .unwrap_or("")
            .starts_with("20"),
        "{r:?}"
    );
    let l = run(&["--json", "list"]);
    let listed = l.json()["listings"][0]["backups"].as_array().map(Vec::len);
    assert_eq!(listed, Some(3), "the locked chain stays whole: {l:?}");
    let p = run(&["prune", "--dry-run"]);
    assert!(
        p.stdout.contains("retained") && p.stdout.contains("Object Lock"),
        "{p:?}"
    );
    let v = run(&["verify", "--backup", &full]);
    assert_eq!(v.code, 0, "{v:?}");
}
