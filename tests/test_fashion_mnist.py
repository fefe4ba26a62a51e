"""Fashion-MNIST reader: IDX parsing on generated files, every validation error, the search order,
the download (from a local file:// URL; tests never touch the network), and the real files when
they are installed."""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from experiments.data import fashion_mnist as fm

# ---------------------------------------------------------------------------------------------
# Writing IDX files independently of the reader: struct with explicit big-endian formats.

_TYPE_CODES = {"B": 0x08, "b": 0x09, "h": 0x0B, "i": 0x0C, "f": 0x0D, "d": 0x0E}


def idx_bytes(values, shape, fmt="B") -> bytes:
    header = struct.pack(">BBBB", 0, 0, _TYPE_CODES[fmt], len(shape))
    header += struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def fake_release(n_train=6, n_test=4, marker=0, seed=0):
    """Bytes of the four files of a tiny Fashion-MNIST-shaped release; `marker` is pixel [0,0,0]."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8)
    test = rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8)
    train[0, 0, 0] = marker
    train_labels = np.arange(n_train) % 10
    test_labels = (np.arange(n_test) * 3) % 10
    return {
        "train-images-idx3-ubyte": idx_bytes(train.ravel().tolist(), train.shape),
        "train-labels-idx1-ubyte": idx_bytes(train_labels.tolist(), (n_train,)),
        "t10k-images-idx3-ubyte": idx_bytes(test.ravel().tolist(), test.shape),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels.tolist(), (n_test,)),
    }


def write_release(folder: Path, release: dict[str, bytes], gz: bool = True) -> None:
    for name, data in release.items():
        write(folder / name, data, gz)


@pytest.fixture
def fake_hashes(monkeypatch):
    """Makes the reader expect the SHA-256 of `fake_release()`'s files."""
    release = fake_release()
    for name, data in release.items():
        monkeypatch.setitem(fm.SHA256, name, hashlib.sha256(data).hexdigest())
    return release


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $LTWEIGHTS_DATA, no repository copy, no Debian folders, an empty cache: nothing is found
    unless added."""
    monkeypatch.delenv(fm.DATA_ENV, raising=False)
    monkeypatch.delenv(fm.NO_SYSTEM_DATA_ENV, raising=False)
    monkeypatch.setattr(fm, "REPOSITORY_DIR", tmp_path / "no-repository-copy")
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fm, "debian_package_dirs", lambda: [])
    fm._read_cached.cache_clear()
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_uint8_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "img", idx_bytes(images.ravel().tolist(), (2, 3, 4)), gz)
    out = fm.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)
    labels = write(tmp_path / "lab", idx_bytes([9, 0, 3], (3,)), gz)
    np.testing.assert_array_equal(fm.read_idx(labels, ndim=1), [9, 0, 3])
    assert out.flags.writeable and out.flags.c_contiguous


@pytest.mark.parametrize(
    ("fmt", "values", "dtype"),
    [
        ("b", [-128, -1, 0, 127], np.int8),
        ("h", [-30000, -2, 1, 30000], np.int16),
        ("i", [-(2**31), -5, 7, 2**31 - 1], np.int32),
        ("f", [-1.5, 0.0, 0.25, 3e38], np.float32),
        ("d", [-1e300, 0.5, 2.0, 1e-300], np.float64),
    ],
)
def test_parse_idx_big_endian_types(fmt, values, dtype):
    out = fm.parse_idx(idx_bytes(values, (2, 2), fmt))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, np.asarray(values, dtype).reshape(2, 2))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "wrong magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x05", "wrong magic"),
        (b"\x00\x00\x08\x00", "wrong magic"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (idx_bytes([1, 2, 3, 4], (2, 2))[:-1], "truncated"),
        (idx_bytes([1, 2, 3, 4], (2, 2)) + b"\x00", "trailing bytes"),
    ],
)
def test_parse_idx_rejects_bad_data_naming_the_file(data, message):
    with pytest.raises(fm.IdxError, match=message) as info:
        fm.parse_idx(data, name="some-file")
    assert "some-file" in str(info.value)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes([1] * 64, (4, 4, 4)), gz=True)
    path.write_bytes(path.read_bytes()[:-12])  # cut the tail (CRC and data)
    with pytest.raises(fm.IdxError, match="corrupt or truncated gzip") as info:
        fm.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_checksum_is_of_the_decompressed_bytes(tmp_path, gz):
    data = idx_bytes([1, 2, 3], (3,))
    path = write(tmp_path / "labels", data, gz)
    fm.read_idx(path, sha256=hashlib.sha256(data).hexdigest())  # passes for gz and raw alike
    with pytest.raises(fm.IdxError, match="SHA-256") as info:
        fm.read_idx(path, sha256="0" * 64)
    assert str(path) in str(info.value) and "apt-get install dataset-fashion-mnist" in str(
        info.value
    )


def test_wrong_ndim_is_an_error(tmp_path):
    path = write(tmp_path / "x", idx_bytes([1, 2], (2,)), gz=False)
    with pytest.raises(fm.IdxError, match="expected 3"):
        fm.read_idx(path, ndim=3)


# ---------------------------------------------------------------------------------------------
# Release-level checks


def _files(folder: Path) -> dict[str, Path]:
    found = fm.files_in(folder)
    assert found is not None
    return found


def test_read_files_decodes_a_release(tmp_path, fake_hashes):
    write_release(tmp_path, fake_hashes)
    train, train_labels, test, test_labels = fm.read_fashion_mnist_files(_files(tmp_path))
    assert train.shape == (6, 28, 28) and test.shape == (4, 28, 28)
    np.testing.assert_array_equal(train_labels, np.arange(6) % 10)
    np.testing.assert_array_equal(test_labels, [0, 3, 6, 9])


def test_count_mismatch_names_both_files(tmp_path):
    release = fake_release()
    release["train-labels-idx1-ubyte"] = idx_bytes([0, 1, 2, 3, 4], (5,))  # 5 labels, 6 images
    write_release(tmp_path, release)
    with pytest.raises(fm.IdxError, match="5 labels but") as info:
        fm.read_fashion_mnist_files(_files(tmp_path), checksums=None)
    assert "train-labels" in str(info.value) and "train-images" in str(info.value)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("t10k-images-idx3-ubyte", idx_bytes([0] * 4 * 27 * 27, (4, 27, 27)), r"\(28, 28\)"),
        ("t10k-labels-idx1-ubyte", idx_bytes([0, 1, 10, 2], (4,)), "out of range"),
        ("t10k-labels-idx1-ubyte", idx_bytes([0, 1, 2, 3], (4,), "h"), "uint8"),
        ("train-images-idx3-ubyte", idx_bytes([0] * 6, (6,)), "expected 3"),
    ],
)
def test_release_content_errors_name_the_file(tmp_path, name, data, message):
    release = fake_release()
    release[name] = data
    write_release(tmp_path, release, gz=False)
    with pytest.raises(fm.IdxError, match=message) as info:
        fm.read_fashion_mnist_files(_files(tmp_path), checksums=None)
    assert name in str(info.value)


def test_release_checksum_mismatch(tmp_path, fake_hashes, monkeypatch):
    write_release(tmp_path, fake_hashes)
    monkeypatch.setitem(fm.SHA256, "t10k-images-idx3-ubyte", "f" * 64)
    with pytest.raises(fm.IdxError, match="SHA-256") as info:
        fm.read_fashion_mnist_files(_files(tmp_path))
    assert "t10k-images-idx3-ubyte" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Search order


def test_files_in_accepts_plain_and_gz_and_requires_all_four(tmp_path):
    release = fake_release()
    for i, (name, data) in enumerate(release.items()):
        write(tmp_path / name, data, gz=bool(i % 2))
    assert set(_files(tmp_path)) == set(fm.FILE_NAMES)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert fm.files_in(tmp_path) is None


def test_search_order_data_dir_env_repository_debian_cache(isolated, monkeypatch, fake_hashes):
    root = isolated
    folders = {
        "data_dir": root / "explicit",
        "env": root / "env",
        "repository": root / "repository",
        "debian": root / "debian",
        "cache": root / "cache" / "fashion-mnist",
    }
    for folder in folders.values():
        write_release(folder, fake_hashes)
    monkeypatch.setenv(fm.DATA_ENV, str(folders["env"]))
    monkeypatch.setattr(fm, "REPOSITORY_DIR", folders["repository"])
    monkeypatch.setattr(fm, "debian_package_dirs", lambda: [folders["debian"]])

    def found(**kw):
        source, files = fm.find_fashion_mnist(**kw)
        return source, files["train-images-idx3-ubyte"].parent

    assert found(data_dir=folders["data_dir"]) == ("data_dir", folders["data_dir"])
    assert found() == (fm.DATA_ENV, folders["env"])
    monkeypatch.delenv(fm.DATA_ENV)
    assert found() == ("repository", folders["repository"])
    monkeypatch.setattr(fm, "REPOSITORY_DIR", root / "no-repository-copy")
    assert found() == ("debian", folders["debian"])
    monkeypatch.setattr(fm, "debian_package_dirs", lambda: [root / "no-such-folder"])
    assert found() == ("cache", folders["cache"])
    # An explicit cache_dir beats $LTWEIGHTS_CACHE.
    write_release(root / "other-cache" / "fashion-mnist", fake_hashes)
    assert found(cache_dir=root / "other-cache")[1] == root / "other-cache" / "fashion-mnist"


@pytest.mark.parametrize("how", ["data_dir", "env"])
def test_explicit_folder_without_the_files_is_an_error(isolated, monkeypatch, how):
    empty = isolated / "empty"
    empty.mkdir()
    (empty / "train-images-idx3-ubyte.gz").write_bytes(b"")
    kwargs = {}
    if how == "data_dir":
        kwargs["data_dir"] = empty
    else:
        monkeypatch.setenv(fm.DATA_ENV, str(empty))
    with pytest.raises(FileNotFoundError, match="lacks") as info:
        fm.find_fashion_mnist(**kwargs)
    message = str(info.value)
    missing = message.split("lacks ")[1].split(" (plain")[0]
    assert missing == "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    assert "apt-get install dataset-fashion-mnist" in message


def test_no_system_data_hides_debian_cache_and_download(isolated, monkeypatch, fake_hashes):
    root = isolated
    write_release(root / "debian", fake_hashes)
    write_release(root / "cache" / "fashion-mnist", fake_hashes)
    mirror = root / "mirror"
    write_release(mirror, fake_hashes, gz=True)
    monkeypatch.setattr(fm, "URLS", (mirror.as_uri() + "/",))
    monkeypatch.setattr(fm, "debian_package_dirs", lambda: [root / "debian"])
    assert fm.find_fashion_mnist()[0] == "debian"
    for value in ("1", "yes"):
        monkeypatch.setenv(fm.NO_SYSTEM_DATA_ENV, value)
        assert [s for s, _ in fm.candidate_dirs()] == ["repository"]
        assert fm.find_fashion_mnist() is None
        with pytest.raises(FileNotFoundError, match="repository"):
            fm.load_fashion_mnist(download=True)  # no download either
    monkeypatch.setenv(fm.NO_SYSTEM_DATA_ENV, "0")  # "0" and "" mean unset
    assert fm.find_fashion_mnist()[0] == "debian"
    # The explicit choices still count.
    monkeypatch.setenv(fm.NO_SYSTEM_DATA_ENV, "1")
    assert fm.find_fashion_mnist(data_dir=root / "debian")[0] == "data_dir"


def test_not_found_offline_says_how_to_get_it(isolated):
    with pytest.raises(FileNotFoundError) as info:
        fm.load_fashion_mnist(download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "data_dir" in message


def test_debian_dirs_come_from_dpkg(monkeypatch, tmp_path):
    class Done:
        stdout = "/.\n/usr/share/x\n/opt/pkg/fm/train-images-idx3-ubyte.gz\n/opt/pkg/fm/README\n"

    monkeypatch.setattr(fm.shutil, "which", lambda name: "/usr/bin/dpkg")
    monkeypatch.setattr(fm.subprocess, "run", lambda *a, **k: Done())
    monkeypatch.setattr(fm.glob, "glob", lambda pattern: [])
    assert fm.debian_package_dirs() == [Path("/opt/pkg/fm")]


def test_load_fashion_mnist_from_data_dir(isolated, fake_hashes):
    write_release(isolated / "d", fake_hashes, gz=False)
    data = fm.load_fashion_mnist(data_dir=isolated / "d")
    assert data.train_images.shape == (6, 28, 28) and not data.train_images.flags.writeable
    assert data.provenance["source"] == "data_dir"
    assert (
        data.provenance["files"]["train-labels-idx1-ubyte"]["sha256"]
        == hashlib.sha256(fake_hashes["train-labels-idx1-ubyte"]).hexdigest()
    )


# ---------------------------------------------------------------------------------------------
# Download (file:// URLs and fake openers only)


def test_download_verifies_and_places_files(isolated, fake_hashes):
    mirror = isolated / "mirror"
    write_release(mirror, fake_hashes, gz=True)
    dest = isolated / "dl"
    bad_url = (isolated / "no-mirror").as_uri() + "/"  # first location missing: falls through
    paths = fm.download_fashion_mnist(dest, urls=[bad_url, mirror.as_uri() + "/"], progress=False)
    assert sorted(p.name for p in dest.iterdir() if not p.name.endswith(".json")) == sorted(
        f"{n}.gz" for n in fm.FILE_NAMES
    )
    for name, path in paths.items():
        assert path.read_bytes() == (mirror / f"{name}.gz").read_bytes()


def test_load_downloads_into_the_cache_only_when_allowed(isolated, fake_hashes, monkeypatch):
    mirror = isolated / "mirror"
    write_release(mirror, fake_hashes, gz=True)
    monkeypatch.setattr(fm, "URLS", (mirror.as_uri() + "/",))
    with pytest.raises(FileNotFoundError):
        fm.load_fashion_mnist(download=False)
    data = fm.load_fashion_mnist(download=True)
    assert data.provenance["source"] == "download"
    assert data.train_images[0, 0, 0] == 0
    # Now found in the cache, no download needed.
    assert fm.find_fashion_mnist()[0] == "cache"


def test_download_checksum_mismatch_keeps_nothing(isolated, fake_hashes, monkeypatch):
    mirror = isolated / "mirror"
    release = dict(fake_hashes)
    release["t10k-images-idx3-ubyte"] = (
        fake_release(marker=77)["t10k-images-idx3-ubyte"][:-1] + b"x"
    )
    write_release(mirror, release, gz=True)
    dest = isolated / "dl"
    with pytest.raises(fm.IdxError, match="SHA-256") as info:
        fm.download_fashion_mnist(dest, urls=[mirror.as_uri() + "/"], progress=False)
    assert "t10k-images-idx3-ubyte" in str(info.value)
    leftovers = sorted(p.name for p in dest.iterdir())
    assert "t10k-images-idx3-ubyte.gz" not in leftovers
    assert not [n for n in leftovers if n.endswith(".part")]


def test_download_offline_says_how_to_get_it(isolated):
    def offline(url, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    dest = isolated / "dl"
    with pytest.raises(ConnectionError) as info:
        fm.download_fashion_mnist(dest, opener=offline, progress=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert list(dest.iterdir()) == []


def test_interrupted_download_keeps_nothing(isolated, fake_hashes):
    """A connection that dies mid-file leaves no partial file behind."""
    payload = gzip.compress(fake_hashes["train-images-idx3-ubyte"])

    class Dying:
        def __init__(self):
            self.headers = {"Content-Length": str(len(payload))}
            self.sent = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            if self.sent:
                raise ConnectionResetError("connection reset by peer")
            self.sent = True
            return payload[: len(payload) // 2]

    dest = isolated / "dl"
    with pytest.raises(ConnectionError, match="connection reset"):
        fm.download_fashion_mnist(
            dest, urls=["http://x/"], opener=lambda url, **kwargs: Dying(), progress=False
        )
    assert list(dest.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The real files: the copy embedded in the repository


def test_repository_copy_is_the_release():
    """The embedded files are found with no other location and pass every check (SHA-256 of the
    decompressed bytes, shapes, label range) against the published checksums."""
    assert fm.files_in(fm.REPOSITORY_DIR) is not None, (
        f"the embedded Fashion-MNIST files are missing from {fm.REPOSITORY_DIR}"
    )
    files = fm.files_in(fm.REPOSITORY_DIR)
    assert all(path.suffix == ".gz" for path in files.values())
    train_images, _, test_images, test_labels = fm.read_fashion_mnist_files(files)
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
    # The README beside the files states the same checksums as the loader.
    readme = (fm.REPOSITORY_DIR / "README.md").read_text(encoding="utf-8")
    for name, digest in fm.SHA256.items():
        assert f"`{name}.gz`" in readme and digest in readme
    assert "MIT" in (fm.REPOSITORY_DIR / "LICENSE").read_text(encoding="utf-8")


def test_real_release(real_fashion_mnist):
    data = real_fashion_mnist
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(data.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test_labels), [1000] * 10)
    assert data.train_images.dtype == np.uint8 and data.train_images.max() == 255
    for entry in data.provenance["files"].values():
        assert entry["sha256"] in fm.SHA256.values()
