"""Download + checksum + extraction against an archive served by the test on 127.0.0.1."""

import functools
import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from common.errors import InputError
from prior_training.archives import ArchiveSpec, prepare_archive


@pytest.fixture()
def served(tmp_path):
    """A .tgz with two fake images in ``photos/``, served over HTTP from a local thread."""
    root = tmp_path / "www"
    root.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("photos/a.png", "photos/b.png"):
            data = name.encode() * 10
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "set.tgz").write_bytes(buffer.getvalue())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/set.tgz", buffer.getvalue()
    server.shutdown()


def test_download_verify_extract(served, tmp_path):
    url, payload = served
    spec = ArchiveSpec(name="toy", url=url, image_dir="photos",
                       md5=hashlib.md5(payload).hexdigest(), sha256=hashlib.sha256(payload).hexdigest())
    cache = tmp_path / "cache"
    images = prepare_archive(spec, root=cache)
    assert images == cache / "toy" / "photos"
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]
    assert (images / "a.png").read_bytes() == b"photos/a.png" * 10
    assert [p.name for p in cache.iterdir()] == ["toy"]  # no temporary folder left behind
    # a second call uses the cache (the server is not needed any more)
    assert prepare_archive(ArchiveSpec(name="toy", url="http://127.0.0.1:9/none", image_dir="photos"), root=cache) == images


@pytest.mark.parametrize("field", ["md5", "sha256"])
def test_bad_checksum_deletes_download_and_leaves_nothing(served, tmp_path, field):
    url, _ = served
    spec = ArchiveSpec(name="toy", url=url, image_dir="photos", **{field: "0" * (32 if field == "md5" else 64)})
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=f"failed its {field} check"):
        prepare_archive(spec, root=cache)
    assert list(cache.iterdir()) == []


def test_missing_archive_and_manual_dataset_messages(served, tmp_path):
    url, _ = served
    with pytest.raises(InputError, match="cannot download"):
        prepare_archive(ArchiveSpec(name="toy", url=url.replace("set.tgz", "nope.tgz"), image_dir="x"), root=tmp_path)
    with pytest.raises(InputError, match="has no folder"):
        prepare_archive(ArchiveSpec(name="toy", url=url, image_dir="elsewhere"), root=tmp_path)
    manual = ArchiveSpec(name="imagenet-val", url=None, image_dir="val", instructions="put the JPEGs into")
    with pytest.raises(InputError, match=r"put the JPEGs into .*imagenet-val/val"):
        prepare_archive(manual, root=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_corrupt_archive_with_matching_checksum_is_refused_and_cleaned_up(served, tmp_path):
    url, payload = served
    damaged = payload[: len(payload) // 2]
    (tmp_path / "www" / "cut.tgz").write_bytes(damaged)
    spec = ArchiveSpec(name="toy", url=url.replace("set.tgz", "cut.tgz"), image_dir="photos",
                       md5=hashlib.md5(damaged).hexdigest())
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="cannot extract cut.tgz"):
        prepare_archive(spec, root=cache)
    assert list(cache.iterdir()) == []
