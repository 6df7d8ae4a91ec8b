"""Helpers for the offsite tests: moto's S3 server on loopback, offsite configs, bucket reads."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent_support import write_private
from conftest import free_port, lab_net

MOTO = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"


class MotoS3:
    """moto's S3 server as a real HTTP endpoint on loopback; bucket created on start."""

    def __init__(self, directory: Path, bucket: str = "saveos-offsite"):
        self.host = f"{lab_net()}.1"
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.bucket = bucket
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = "sk-" + secrets.token_urlsafe(30)
        self.log = directory / f"moto-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoS3:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(MOTO), "-H", self.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client().create_bucket(Bucket=self.bucket)
                return self
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not start: " + self.log.read_text()[-2000:])
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def objects(self, prefix: str, bucket: str | None = None) -> dict[str, dict]:
        """key -> {size, etag} under prefix."""
        out = {}
        for page in (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket or self.bucket, Prefix=prefix)
        ):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = {"size": obj["Size"], "etag": obj["ETag"].strip('"')}
        return out

    def sha256(self, key: str, bucket: str | None = None) -> str:
        body = self.client().get_object(Bucket=bucket or self.bucket, Key=key)["Body"].read()
        return hashlib.sha256(body).hexdigest()

    def credentials_file(self, path: Path) -> Path:
        return write_private(
            path,
            f"[default]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n",
        )


def offsite_config(path: Path, s3: MotoS3, repo: Path, host: str, state_dir: Path, **extra) -> Path:
    config = {
        "bucket": s3.bucket,
        "prefix": "fleet",
        "host": host,
        "repository": str(repo),
        "endpoint_url": s3.url,
        "region": REGION,
        "credentials_file": str(s3.credentials_file(path.parent / "s3-credentials")),
        "state_dir": str(state_dir),
        "delete_delay_s": 3600,
        "connect_timeout_s": 2,
    }
    config.update(extra)
    return write_private(path, json.dumps(config))


def local_repo_files(repo: Path) -> dict[str, str]:
    """relative path -> sha256 of every file the sync copies (borg's lock files excluded)."""
    out = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if path.is_file() and not rel.startswith(("lock.exclusive", "lock.roster")):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
