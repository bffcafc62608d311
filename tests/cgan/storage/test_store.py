import pytest

from cgan.storage.keys import StoreError, check_key
from cgan.storage.store import LocalStore, S3Store, download_keys, open_store, upload_dir


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a//b", "a/./b", "a b", "a;b", "", "a\\b"])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(StoreError):
        check_key(key)


@pytest.mark.parametrize("uri,message", [
    ("", "empty"), ("relative/dir", "absolute path"), ("file://host/x", "absolute path"),
    ("file:///a/../b", "'..'"), ("s3://UPPER/x", "not a valid S3 bucket name"), ("s3://ab/x", "not a valid"),
    ("ftp://x/y", "unsupported scheme"), ("s3://bucket/../x", "unsafe part"),
])
def test_bad_store_uris(uri, message):
    with pytest.raises(StoreError, match=message):
        open_store(uri)


def _exercise(store, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.bin").write_bytes(b"A" * 10)
    (tmp_path / "up" / "b.bin").write_bytes(b"B" * 20)
    (tmp_path / "up" / ".hidden.part").write_bytes(b"partial")
    assert upload_dir(store, tmp_path / "up", "x/y") == ["x/y/a.bin", "x/y/b.bin"]
    store.put_bytes(b"{}", "x/meta.json")
    assert store.list("x") == ["x/meta.json", "x/y/a.bin", "x/y/b.bin"]
    assert store.exists("x/y/a.bin") and not store.exists("x/y/zzz.bin")
    got = download_keys(store, store.list("x/y"), tmp_path / "down")
    assert [p.read_bytes() for p in got] == [b"A" * 10, b"B" * 20]
    assert store.child("x").list("y") == ["y/a.bin", "y/b.bin"]
    store.delete_prefix("x/y")
    assert store.list("x") == ["x/meta.json"]
    with pytest.raises(StoreError, match="not found|cannot fetch"):
        store.get_bytes("x/none.json")


def test_local_store(tmp_path):
    store = open_store((tmp_path / "root").as_uri())
    assert isinstance(store, LocalStore)
    _exercise(store, tmp_path)


def test_s3_store_on_a_real_server(tmp_path, local_s3):
    local_s3["client"].create_bucket(Bucket="store-test")
    store = open_store("s3://store-test/work/run1", s3_client=local_s3["client"])
    assert isinstance(store, S3Store) and store.uri == "s3://store-test/work/run1"
    _exercise(store, tmp_path)
    keys = [o["Key"] for o in local_s3["client"].list_objects_v2(Bucket="store-test")["Contents"]]
    assert keys == ["work/run1/x/meta.json"]


def test_s3_store_failures_are_classified(local_s3):
    """A missing artifact or refused credentials cannot be fixed by a retry (StoreError); a store
    that is down can (cgan.storage.s3.S3Error, not a StoreError), and no message shows the secret."""
    import boto3
    from botocore.config import Config

    from cgan.storage.s3 import S3Error
    from scripts.local_s3 import free_port_block

    local_s3["client"].create_bucket(Bucket="store-classes")
    store = open_store("s3://store-classes/ws", s3_client=local_s3["client"])
    with pytest.raises(StoreError, match=r"artifact 'none\.json' not found in s3://store-classes/ws at http://"):
        store.get_bytes("none.json")
    wrong = boto3.client("s3", endpoint_url=local_s3["endpoint"], region_name="us-east-1",
                         aws_access_key_id=local_s3["access_key"], aws_secret_access_key="wrong-secret-never-shown")
    with pytest.raises(StoreError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403") as err:
        open_store("s3://store-classes/ws", s3_client=wrong).put_bytes(b"x", "a.json")
    assert "wrong-secret-never-shown" not in str(err.value)
    with pytest.raises(StoreError, match="upload of s3://store-classes/ws/b.bin failed .*(SignatureDoesNotMatch|403)"):
        open_store("s3://store-classes/ws", s3_client=wrong).put_file(__file__, "b.bin")  # through upload_file
    down = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port_block()}", region_name="us-east-1",
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(S3Error) as err:
        open_store("s3://store-classes/ws", s3_client=down).get_bytes("a.json")
    assert not isinstance(err.value, StoreError) and "cannot read s3://store-classes/ws/a.json" in str(err.value)


def test_s3_folder_transfers_are_concurrent_single_requests_in_order(tmp_path, local_s3):
    """upload_dir / download_keys on an S3 store: each small file one PUT (no multipart ETag), every
    file back byte for byte and in order, a large one streamed in chunks; a missing key among many
    fails the call naming it and leaves no partial file."""
    import os

    from cgan.storage import s3

    client = local_s3["client"]
    client.create_bucket(Bucket="store-many")
    store = open_store("s3://store-many/ws", s3_client=client)
    up = tmp_path / "up"
    up.mkdir()
    blobs = {f"grid_{i:08d}.bin": os.urandom(100 + 37 * i) for i in range(40)}
    blobs["big.bin"] = os.urandom(3 * (1 << 20) + 5)  # more than one 1 MiB chunk on the way down
    for name, data in blobs.items():
        (up / name).write_bytes(data)
    keys = upload_dir(store, up, "bins")
    assert keys == [f"bins/{n}" for n in sorted(blobs)]
    etags = [client.head_object(Bucket="store-many", Key=f"ws/{k}")["ETag"] for k in keys]
    assert not any("-" in e for e in etags)  # one PUT each, not the transfer manager's multipart
    got = download_keys(store, list(reversed(keys)), tmp_path / "down")
    assert [p.name for p in got] == sorted(blobs, reverse=True)
    assert all(p.read_bytes() == blobs[p.name] for p in got)

    with pytest.raises(StoreError, match="bins/missing.bin"):
        download_keys(store, [*keys[:5], "bins/missing.bin", *keys[5:]], tmp_path / "again")
    assert not list((tmp_path / "again").glob(".*part"))

    # above the threshold a file still goes multipart through boto3's transfer manager
    s3.upload_file(client, "store-many", "ws/large.bin", up / "big.bin", multipart_threshold=1 << 20)
    assert "-" in client.head_object(Bucket="store-many", Key="ws/large.bin")["ETag"]
