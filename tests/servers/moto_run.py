"""Runs moto's S3 server (`moto_server` arguments) with two fixes to moto 5.2.5.

IAM conditions on S3 requests are evaluated as AWS does (moto_conditions.py),
so the uploader policy's Deny of a PutObject without If-None-Match can be
tested.


UploadPart and CompleteMultipartUpload on an upload that does not exist
(aborted, completed, expired) fail in moto with a KeyError, which the client
sees as HTTP 500. S3 answers 404 NoSuchUpload, and offsite relies on that to
restart a volume whose upload is gone. This makes moto answer the way S3
does.

With `--state FILE` (the server-restart tests), the S3 data is loaded from
FILE at start and saved there on SIGTERM, so the server can be stopped and
started again the way a real one keeps its data, including multipart
uploads in progress. Without it nothing is kept, as with moto_server.
"""
import os
import pickle
import sys

import moto_conditions  # noqa: F401  (patches moto's IAM condition checks)
from moto.s3 import models
from moto.s3.exceptions import NoSuchUpload
from moto.server import main


def _known_upload(method):
    def checked(self, bucket_name, multipart_id, *args, **kwargs):
        if multipart_id not in self.get_bucket(bucket_name).multiparts:
            raise NoSuchUpload(upload_id=multipart_id)
        return method(self, bucket_name, multipart_id, *args, **kwargs)

    return checked


models.S3Backend.upload_part = _known_upload(models.S3Backend.upload_part)
models.S3Backend.complete_multipart_upload = _known_upload(
    models.S3Backend.complete_multipart_upload
)

def _keep_state(path):
    """Loads the S3 backends from `path` if it exists, and saves them there
    when the server is told to stop (moto's own handler only exits)."""
    import moto.server

    if os.path.exists(path):
        with open(path, "rb") as f:
            models.s3_backends.update(pickle.load(f))

    def save_and_exit(signum, frame):
        tmp = f"{path}.tmp"
        # A request being served can change a dict while it is pickled:
        # then try again.
        for attempt in range(20):
            try:
                with open(tmp, "wb") as f:
                    pickle.dump(dict(models.s3_backends), f)
                break
            except RuntimeError:
                if attempt == 19:
                    raise
        os.replace(tmp, path)
        os._exit(0)

    moto.server.signal_handler = save_and_exit


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--state" in args:
        i = args.index("--state")
        _keep_state(args[i + 1])
        del args[i : i + 2]
    sys.exit(main(args))
