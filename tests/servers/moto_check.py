"""Checks a running moto harness (tests/servers/moto.sh start) for real and
prints what moto does with checksums, storage classes and restores.

Usage: target/servers/venv/bin/python tests/servers/moto_check.py [ENV_FILE]
PASS/FAIL lines are expectations (exit 1 on any FAIL); INFO lines only
report what this moto version does.
"""
import base64
import hashlib
import json
import os
import sys
import time
import urllib.request
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
env_file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/servers/moto.env")
ENV = dict(l.strip().split("=", 1) for l in open(env_file) if "=" in l)
URL, BUCKET = ENV["MOTO_ENDPOINT"], ENV["MOTO_BUCKET"]
P = f"check-{uuid.uuid4().hex[:8]}/"  # fresh key prefix per run
failed = []
sent = {}  # headers of the last request, per client


def client(user):
    c = boto3.client(
        "s3",
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=ENV[f"MOTO_{user.upper()}_ACCESS_KEY_ID"],
        aws_secret_access_key=ENV[f"MOTO_{user.upper()}_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    c.meta.events.register("before-send.s3.*", lambda request, **_: sent.update({user: dict(request.headers)}))
    return c


def outcome(fn):
    """'ok' (with the result) or the error code and HTTP status."""
    try:
        return "ok", fn()
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        return f"{err.get('Code')} (HTTP {status})", err.get("Message")


def check(name, fn, expect=None):
    """expect: None (INFO only), 'ok', or an error code that must match."""
    got, detail = outcome(fn)
    if expect is None:
        tag = "INFO"
    else:
        met = got == "ok" if expect == "ok" else got.startswith(expect + " ")
        tag = "PASS" if met else "FAIL"
    if tag == "FAIL":
        failed.append(name)
    extra = f"  [{detail}]" if got != "ok" and detail else ""
    print(f"{tag:4} {name}: {got}{extra}")
    return detail if got == "ok" else None


def show_sent(user="admin"):
    hs = {k: v.decode() if isinstance(v, bytes) else v for k, v in sent[user].items()}
    print("     sent:", {k: v for k, v in hs.items() if k.lower().startswith(("x-amz-checksum", "x-amz-sdk-checksum", "content-md5"))})


def b64(digest):
    return base64.b64encode(digest).decode()


def multipart(c, key, parts, create_args=None, part_args=None, complete_keys=("ETag",)):
    """Create, upload the parts, complete; returns the CompleteMultipartUpload reply."""
    up = c.create_multipart_upload(Bucket=BUCKET, Key=key, **(create_args or {}))["UploadId"]
    done = []
    for n, body in enumerate(parts, 1):
        r = c.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n, Body=body, **(part_args or {}))
        done.append({"PartNumber": n, **{k: r[k] for k in complete_keys}})
    return c.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={"Parts": done})


def moto_api(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req).read()


up, pr, rs, ad = (client(u) for u in ("uploader", "pruner", "restorer", "admin"))
BIG, SMALL = os.urandom(5 * 1024 * 1024), b"last part"

print("== uploader (s3:PutObject only)")
check("PutObject", lambda: up.put_object(Bucket=BUCKET, Key=P + "a", Body=b"hello"), "ok")
check("multipart 5 MiB + small part", lambda: multipart(up, P + "mp", [BIG, SMALL]), "ok")
check("GetObject", lambda: up.get_object(Bucket=BUCKET, Key=P + "a"), "AccessDenied")
check("ListObjectsV2", lambda: up.list_objects_v2(Bucket=BUCKET), "AccessDenied")
check("DeleteObject", lambda: up.delete_object(Bucket=BUCKET, Key=P + "a"), "AccessDenied")
check("HeadObject", lambda: up.head_object(Bucket=BUCKET, Key=P + "a"), "403")
open_up = ad.create_multipart_upload(Bucket=BUCKET, Key=P + "open")["UploadId"]
check("AbortMultipartUpload", lambda: up.abort_multipart_upload(Bucket=BUCKET, Key=P + "open", UploadId=open_up), "AccessDenied")
check("ListParts", lambda: up.list_parts(Bucket=BUCKET, Key=P + "open", UploadId=open_up), "AccessDenied")
check("ListMultipartUploads", lambda: up.list_multipart_uploads(Bucket=BUCKET), "AccessDenied")

print("== admin (s3:*)")
check("GetObject multipart object", lambda: ad.get_object(Bucket=BUCKET, Key=P + "mp")["Body"].read() == BIG + SMALL or 1 / 0, "ok")
check("ListObjectsV2", lambda: ad.list_objects_v2(Bucket=BUCKET, Prefix=P), "ok")
check("HeadObject", lambda: ad.head_object(Bucket=BUCKET, Key=P + "a"), "ok")
check("ListMultipartUploads", lambda: ad.list_multipart_uploads(Bucket=BUCKET), "ok")
check("PutObject + DeleteObject", lambda: (ad.put_object(Bucket=BUCKET, Key=P + "x", Body=b"x"), ad.delete_object(Bucket=BUCKET, Key=P + "x")), "ok")

print("== pruner (list/get/delete, multipart cleanup)")
check("ListObjectsV2", lambda: pr.list_objects_v2(Bucket=BUCKET, Prefix=P)["KeyCount"] >= 2 or 1 / 0, "ok")
check("GetObject", lambda: pr.get_object(Bucket=BUCKET, Key=P + "a")["Body"].read(), "ok")
check("ListMultipartUploads", lambda: pr.list_multipart_uploads(Bucket=BUCKET), "ok")
check("AbortMultipartUpload", lambda: pr.abort_multipart_upload(Bucket=BUCKET, Key=P + "open", UploadId=open_up), "ok")
check("DeleteObject", lambda: pr.delete_object(Bucket=BUCKET, Key=P + "a"), "ok")
check("PutObject", lambda: pr.put_object(Bucket=BUCKET, Key=P + "p", Body=b"p"), "AccessDenied")

print("== checksums (admin key)")
wrong_sha = b64(hashlib.sha256(b"something else").digest())
check("PutObject, wrong x-amz-checksum-sha256",
      lambda: ad.put_object(Bucket=BUCKET, Key=P + "c1", Body=b"data", ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong_sha))
show_sent()
check("PutObject, wrong Content-MD5",
      lambda: ad.put_object(Bucket=BUCKET, Key=P + "c2", Body=b"data", ContentMD5=b64(hashlib.md5(b"other").digest())))
show_sent()
check("PutObject, malformed Content-MD5",
      lambda: ad.put_object(Bucket=BUCKET, Key=P + "c3", Body=b"data", ContentMD5="not-an-md5"))
u = ad.create_multipart_upload(Bucket=BUCKET, Key=P + "c4", ChecksumAlgorithm="SHA256")["UploadId"]
check("UploadPart, wrong x-amz-checksum-sha256",
      lambda: ad.upload_part(Bucket=BUCKET, Key=P + "c4", UploadId=u, PartNumber=1, Body=SMALL,
                             ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong_sha))
show_sent()
check("UploadPart, wrong Content-MD5",
      lambda: ad.upload_part(Bucket=BUCKET, Key=P + "c4", UploadId=u, PartNumber=2, Body=SMALL,
                             ContentMD5=b64(hashlib.md5(b"other").digest())))
show_sent()
ad.abort_multipart_upload(Bucket=BUCKET, Key=P + "c4", UploadId=u)
r = ad.head_object(Bucket=BUCKET, Key=P + "c1", ChecksumMode="ENABLED")
print("     HeadObject c1 ChecksumSHA256 (stored):", r.get("ChecksumSHA256"), "== the wrong value sent:", r.get("ChecksumSHA256") == wrong_sha)
sha_args = ({"ChecksumAlgorithm": "SHA256"}, {"ChecksumAlgorithm": "SHA256"})
r = check("SHA256 multipart, Complete with per-part ChecksumSHA256",
          lambda: multipart(ad, P + "c5", [BIG, SMALL], *sha_args, complete_keys=("ETag", "ChecksumSHA256")), "ok")
if r:
    print("     reply ChecksumSHA256:", r.get("ChecksumSHA256"), "ChecksumType:", r.get("ChecksumType"))
    stored = ad.head_object(Bucket=BUCKET, Key=P + "c5", ChecksumMode="ENABLED").get("ChecksumSHA256")
    full = b64(hashlib.sha256(BIG + SMALL).digest())
    composite = b64(hashlib.sha256(hashlib.sha256(BIG).digest() + hashlib.sha256(SMALL).digest()).digest())
    print(f"     HeadObject ChecksumSHA256: {stored} (full-object: {stored == full}, composite of parts: {stored == composite})")
r = check("SHA256 multipart, Complete WITHOUT per-part checksums",
          lambda: multipart(ad, P + "c6", [BIG, SMALL], *sha_args))
if r:
    print("     reply ChecksumSHA256:", r.get("ChecksumSHA256"), "ChecksumType:", r.get("ChecksumType"))


def complete_with_wrong_part_checksum():
    key = P + "c7"
    u = ad.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    etag = ad.upload_part(Bucket=BUCKET, Key=key, UploadId=u, PartNumber=1, Body=SMALL, ChecksumAlgorithm="SHA256")["ETag"]
    part = {"PartNumber": 1, "ETag": etag, "ChecksumSHA256": wrong_sha}
    return ad.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=u, MultipartUpload={"Parts": [part]})


check("SHA256 multipart, Complete with WRONG per-part checksum", complete_with_wrong_part_checksum)

print("== storage classes (admin key)")
for sc in ("STANDARD_IA", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"):
    check(f"PutObject {sc}", lambda: ad.put_object(Bucket=BUCKET, Key=P + sc, Body=b"cold", StorageClass=sc), "ok")
    check(f"multipart {sc}", lambda: multipart(ad, P + sc + ".mp", [SMALL], {"StorageClass": sc}), "ok")
    print(f"     HeadObject StorageClass={ad.head_object(Bucket=BUCKET, Key=P + sc + '.mp').get('StorageClass')}")
    check(f"GetObject {sc}", lambda: ad.get_object(Bucket=BUCKET, Key=P + sc)["Body"].read(),
          "InvalidObjectState" if sc in ("GLACIER", "DEEP_ARCHIVE") else "ok")
check("PutObject storage class BOGUS", lambda: ad.put_object(Bucket=BUCKET, Key=P + "bogus", Body=b"x", StorageClass="BOGUS"))
print("     ListObjectsV2 StorageClass:", {o["Key"][len(P):]: o["StorageClass"] for o in ad.list_objects_v2(Bucket=BUCKET, Prefix=P)["Contents"] if "." not in o["Key"][len(P):]})

print("== restore (restorer key)")
restore = {"Days": 1, "GlacierJobParameters": {"Tier": "Standard"}}
check("RestoreObject STANDARD_IA object", lambda: rs.restore_object(Bucket=BUCKET, Key=P + "STANDARD_IA", RestoreRequest=restore), "InvalidObjectState")
r = check("RestoreObject GLACIER (default, immediate)", lambda: rs.restore_object(Bucket=BUCKET, Key=P + "GLACIER", RestoreRequest=restore), "ok")
print("     status:", r and r["ResponseMetadata"]["HTTPStatusCode"], "HeadObject Restore:", rs.head_object(Bucket=BUCKET, Key=P + "GLACIER").get("Restore"))
check("GetObject GLACIER after restore", lambda: rs.get_object(Bucket=BUCKET, Key=P + "GLACIER")["Body"].read() == b"cold" or 1 / 0, "ok")
r = check("RestoreObject again", lambda: rs.restore_object(Bucket=BUCKET, Key=P + "GLACIER", RestoreRequest=restore))
print("     status:", r and r["ResponseMetadata"]["HTTPStatusCode"])
check("restorer PutObject", lambda: rs.put_object(Bucket=BUCKET, Key=P + "r", Body=b"r"), "AccessDenied")
check("restorer DeleteObject", lambda: rs.delete_object(Bucket=BUCKET, Key=P + "GLACIER"), "AccessDenied")
check("uploader RestoreObject", lambda: up.restore_object(Bucket=BUCKET, Key=P + "DEEP_ARCHIVE", RestoreRequest=restore), "AccessDenied")

# A slow restore: moto's state manager can hold restores "in progress" for a
# number of lookups of the object ("manual", counted per backend lookup) or
# seconds since the object was created ("time"); see README.md.
moto_api("/moto-api/state-manager/set-transition", {"model_name": "s3::keyrestore", "transition": {"progression": "manual", "times": 3}})
try:
    r = check("RestoreObject DEEP_ARCHIVE (manual transition, times=3)", lambda: rs.restore_object(Bucket=BUCKET, Key=P + "DEEP_ARCHIVE", RestoreRequest=restore), "ok")
    print("     status:", r and r["ResponseMetadata"]["HTTPStatusCode"])
    for i in range(4):
        print(f"     HeadObject #{i + 1} Restore:", rs.head_object(Bucket=BUCKET, Key=P + "DEEP_ARCHIVE").get("Restore"))
    check("GetObject after the restore completed", lambda: rs.get_object(Bucket=BUCKET, Key=P + "DEEP_ARCHIVE")["Body"].read() == b"cold" or 1 / 0, "ok")
finally:
    moto_api("/moto-api/state-manager/unset-transition", {"model_name": "s3::keyrestore"})

print("FAILED: " + ", ".join(failed) if failed else "all expectations met")
sys.exit(1 if failed else 0)
