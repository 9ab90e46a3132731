"""Creates the test bucket and IAM users on a fresh moto server (auth still
off) and writes their credentials as KEY=value lines.

Usage: python moto_setup.py ENDPOINT ENV_FILE
"""
import json
import os
import sys
import tempfile

import boto3
from botocore.config import Config

BUCKET = "offsite-test"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
OBJECTS_ARN = f"{BUCKET_ARN}/*"


def allow(actions, resource):
    return {"Effect": "Allow", "Action": actions, "Resource": resource}


USERS = {
    "uploader": [allow(["s3:PutObject"], OBJECTS_ARN)],
    "pruner": [
        allow(["s3:ListBucket", "s3:ListBucketMultipartUploads"], BUCKET_ARN),
        allow(["s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"], OBJECTS_ARN),
    ],
    "restorer": [
        allow(["s3:ListBucket"], BUCKET_ARN),
        allow(["s3:GetObject", "s3:RestoreObject"], OBJECTS_ARN),
    ],
    # iam:* lets tests create users with the policies `offsite policy s3` prints.
    "admin": [allow(["s3:*", "iam:*"], "*")],
}


def main():
    endpoint, env_file = sys.argv[1], sys.argv[2]
    common = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **common)
    iam = boto3.client("iam", **common)

    s3.create_bucket(Bucket=BUCKET)
    lines = [f"MOTO_ENDPOINT={endpoint}", f"MOTO_BUCKET={BUCKET}"]
    for user, statements in USERS.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user,
            PolicyName=f"{user}-policy",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        lines.append(f"MOTO_{user.upper()}_ACCESS_KEY_ID={key['AccessKeyId']}")
        lines.append(f"MOTO_{user.upper()}_SECRET_ACCESS_KEY={key['SecretAccessKey']}")

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(env_file)), prefix=".moto.env.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, env_file)


if __name__ == "__main__":
    main()
