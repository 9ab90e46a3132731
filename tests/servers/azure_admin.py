"""What the tests do on Azurite with the account key, outside offsite.

Reads AZURE_ENDPOINT (http://HOST:PORT/ACCOUNT), AZURE_ACCOUNT and AZURE_KEY
from the environment (target/servers/azurite.env has them).

Usage:
  azure_admin.py container NAME...
      creates the containers (no error if one exists)
  azure_admin.py sas CONTAINER PERMISSIONS HOURS
      prints a container SAS token without the leading '?'. PERMISSIONS are
      letters such as rwdlac or cw; HOURS until expiry may be fractional or
      negative (an expired token)
  azure_admin.py tier CONTAINER BLOB
      prints the blob's access tier and archive status ('-' if none), e.g.
      "Archive -" or "Archive rehydrate-pending-to-hot"
  azure_admin.py blocks CONTAINER BLOB
      prints the number of uncommitted blocks, then of committed blocks, e.g.
      "3 0"; "0 0" if the blob does not exist and has no uncommitted blocks
  azure_admin.py discard CONTAINER BLOB
      drops the blob's uncommitted blocks the way their seven-day expiry
      does: commits an empty block list (which discards every uncommitted
      block), then deletes the empty blob. Azurite's Delete Blob alone hides
      the blob but keeps its blocks, and a later commit still finds them
  azure_admin.py archive CONTAINER BLOB
      moves the blob to the Archive tier (Set Blob Tier)
"""
import os
import sys
from datetime import datetime, timedelta, timezone

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    generate_container_sas,
)


def main():
    endpoint = os.environ["AZURE_ENDPOINT"]
    account = os.environ["AZURE_ACCOUNT"]
    key = os.environ["AZURE_KEY"]
    what, args = sys.argv[1], sys.argv[2:]
    service = BlobServiceClient(endpoint, credential={"account_name": account, "account_key": key})

    if what == "container" and args:
        for name in args:
            try:
                service.create_container(name)
            except ResourceExistsError:
                pass
    elif what == "sas" and len(args) == 3:
        container, permissions, hours = args
        print(
            generate_container_sas(
                account,
                container,
                account_key=key,
                permission=ContainerSasPermissions.from_string(permissions),
                expiry=datetime.now(timezone.utc) + timedelta(hours=float(hours)),
            )
        )
    elif what == "tier" and len(args) == 2:
        props = service.get_blob_client(*args).get_blob_properties()
        print(props.blob_tier, props.archive_status or "-")
    elif what == "blocks" and len(args) == 2:
        try:
            committed, uncommitted = service.get_blob_client(*args).get_block_list("all")
        except ResourceNotFoundError as e:
            if e.error_code != "BlobNotFound":
                raise
            committed, uncommitted = [], []
        print(len(uncommitted), len(committed))
    elif what == "discard" and len(args) == 2:
        blob = service.get_blob_client(*args)
        blob.commit_block_list([])
        blob.delete_blob()
    elif what == "archive" and len(args) == 2:
        service.get_blob_client(*args).set_standard_blob_tier("Archive")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
