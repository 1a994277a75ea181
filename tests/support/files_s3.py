"""A real S3-compatible server for the tests: moto's standalone server in a thread, with a
bucket and credentials of its own (the standard AWS variables, as a deployment sets them)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "opentess-test", "AWS_SECRET_ACCESS_KEY": "opentess-test-secret"}
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def settings(self) -> dict[str, object]:
        """The opentess settings that put files in this bucket."""
        return {
            "files_storage": "s3",
            "s3_bucket": self.bucket,
            "s3_endpoint_url": self.endpoint,
            "s3_region": REGION,
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables (for `opentess serve` processes)."""
        return {
            **CREDENTIALS,
            "OPENTESS_FILES_STORAGE": "s3",
            "OPENTESS_S3_BUCKET": self.bucket,
            "OPENTESS_S3_ENDPOINT_URL": self.endpoint,
            "OPENTESS_S3_REGION": REGION,
        }

    def object_keys(self) -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, **_boto_credentials())
        listed = client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free port with one fresh bucket; the AWS credential variables are
    set for the duration (obstore reads them as in a deployment)."""
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"opentess-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **_boto_credentials()).create_bucket(
            Bucket=bucket
        )
        yield S3Server(endpoint, bucket)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
