"""Runs moto's S3 server (`moto_server` arguments) with one fix to moto 5.2.5.

UploadPart and CompleteMultipartUpload on an upload that does not exist
(aborted, completed, expired) fail in moto with a KeyError, which the client
sees as HTTP 500. S3 answers 404 NoSuchUpload, and offsite relies on that to
restart a volume whose upload is gone. This makes moto answer the way S3
does; nothing else changes.
"""
import sys

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

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
