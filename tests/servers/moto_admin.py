"""What the e2e tests do on moto with the admin key, outside offsite.

Usage:
  python moto_admin.py ENV_FILE user NAME POLICY_FILE
      creates IAM user NAME with the inline policy in POLICY_FILE and prints
      ACCESS_KEY_ID=... and SECRET_ACCESS_KEY=... lines
  python moto_admin.py ENV_FILE lifecycle LIFECYCLE_FILE
      puts the lifecycle configuration on the test bucket, then prints the
      configuration moto stored, as JSON
  python moto_admin.py ENV_FILE lock-bucket NAME
      creates bucket NAME with Object Lock enabled (and so versioning)
  python moto_admin.py ENV_FILE locks BUCKET PREFIX
      prints, as JSON, every object version under PREFIX with its lock:
      [{"key", "version", "latest", "mode", "until" (epoch seconds)}]
      (HeadObject: moto 5.2.5 has no GetObjectRetention)
"""
import json
import sys

import boto3
from botocore.config import Config


def env(path):
    out = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                out[k] = v
    return out


def main():
    e = env(sys.argv[1])
    common = dict(
        endpoint_url=e["MOTO_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=e["MOTO_ADMIN_ACCESS_KEY_ID"],
        aws_secret_access_key=e["MOTO_ADMIN_SECRET_ACCESS_KEY"],
    )
    what = sys.argv[2]
    if what == "user":
        name, policy_file = sys.argv[3], sys.argv[4]
        with open(policy_file) as f:
            policy = f.read()
        iam = boto3.client("iam", **common)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=policy)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        print(f"ACCESS_KEY_ID={key['AccessKeyId']}")
        print(f"SECRET_ACCESS_KEY={key['SecretAccessKey']}")
    elif what == "lifecycle":
        with open(sys.argv[3]) as f:
            config = json.load(f)
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **common)
        s3.put_bucket_lifecycle_configuration(Bucket=e["MOTO_BUCKET"], LifecycleConfiguration=config)
        got = s3.get_bucket_lifecycle_configuration(Bucket=e["MOTO_BUCKET"])
        print(json.dumps({"Rules": got["Rules"]}))
    elif what == "lock-bucket":
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **common)
        s3.create_bucket(Bucket=sys.argv[3], ObjectLockEnabledForBucket=True)
    elif what == "locks":
        bucket, prefix = sys.argv[3], sys.argv[4]
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **common)
        out = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                head = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                until = head.get("ObjectLockRetainUntilDate")
                out.append({
                    "key": v["Key"],
                    "version": v["VersionId"],
                    "latest": v["IsLatest"],
                    "mode": head.get("ObjectLockMode"),
                    "until": until.timestamp() if until else None,
                })
        print(json.dumps(out))
    else:
        sys.exit(f"unknown command {what!r}; see the usage in {__file__}")


if __name__ == "__main__":
    main()
