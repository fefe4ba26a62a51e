"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, MIT licence): 70,000 28 x 28 grey product photos
of 10 garment classes, read from its four IDX files with NumPy.

Where the files are looked for, in order:
  1. an explicit `data_dir`;
  2. the folder in $LTWEIGHTS_DATA;
  3. the copy embedded in the repository, `data/fashion-mnist/` (its README says where it is from);
  4. the install folder of Debian's package `dataset-fashion-mnist` (found with `dpkg -L`, or in the
     standard share folders `/usr/share/datasets`, `/usr/local/share/datasets`);
  5. `<cache>/fashion-mnist` (cache: $LTWEIGHTS_CACHE, default ~/.cache/ltweights).
An explicit `data_dir` or $LTWEIGHTS_DATA that lacks the files is an error (the user meant it).
Setting $LTWEIGHTS_NO_SYSTEM_DATA=1 skips the system-wide places (4 and 5) and the download, so a
run can prove that it needs nothing outside the repository. Where no folder holds them and
`download=True`, they are downloaded from the dataset's public location into the cache. Every
file is checked: IDX magic number, dimensions, counts, and the SHA-256 of its decompressed bytes
(Debian recompresses the .gz files, so the .gz hash differs).

IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions d, then d big-endian
uint32 sizes, then the data in C order, big-endian.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from experiments.data.cache import cache_root

DATA_ENV = "LTWEIGHTS_DATA"
NO_SYSTEM_DATA_ENV = "LTWEIGHTS_NO_SYSTEM_DATA"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
# The copy committed with the suite (experiments/ is not installed, so this is the checkout's).
REPOSITORY_DIR = Path(__file__).resolve().parents[2] / "data" / "fashion-mnist"

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# SHA-256 of the decompressed IDX files, as published by the dataset (identical for the
# upstream and Debian copies).
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FILE_NAMES: tuple[str, ...] = tuple(SHA256)

# The dataset's canonical public locations, tried in order.
URLS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

HOW_TO_GET = (
    "The repository carries the files in data/fashion-mnist/ (restore them with `git checkout -- "
    "data/fashion-mnist`), or install them with `sudo apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu), or put the four files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not) in a folder and pass it as "
    f"data_dir (or set ${DATA_ENV}), or allow a download (download=True) on a machine with "
    "internet access."
)


class IdxError(ValueError):
    """A malformed, truncated or unexpected IDX file."""


class FashionMNIST(NamedTuple):
    """The four arrays and where they came from.

    train_images uint8 [60000, 28, 28], train_labels uint8 [60000] (class index 0..9),
    test_images uint8 [10000, 28, 28], test_labels uint8 [10000]; provenance: folder, source,
    and per file its path and SHA-256.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    provenance: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# IDX parsing


def decompressed_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the name)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IdxError(
            f"{path}: corrupt or truncated gzip data ({e}). Delete the file and get it again."
        ) from e


def parse_idx(data: bytes, *, name: str = "IDX data") -> np.ndarray:
    """Decodes IDX bytes into an array of the file's shape (native byte order).

    Raises IdxError naming `name` for a bad magic number, a truncated file or trailing bytes.
    """
    if len(data) < 4:
        raise IdxError(f"{name}: only {len(data)} bytes, too short for an IDX header.")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxError(
            f"{name}: wrong magic number 0x{data[:4].hex()} (an IDX file starts with 00 00, a "
            f"type code in {sorted(hex(c) for c in _IDX_DTYPES)}, and the number of dimensions "
            ">= 1). It is not an IDX file or it is corrupt."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes, need {header}).")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {problem}: {len(data)} bytes, but its header {shape} of {dtype} means "
            f"{expected}. Delete the file and get it again."
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(
    path: str | os.PathLike, *, sha256: str | None = None, ndim: int | None = None
) -> np.ndarray:
    """Reads one IDX file (gzipped or not), checking its SHA-256 and number of dimensions."""
    path = Path(path)
    data = decompressed_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise IdxError(
                f"{path}: SHA-256 of the decompressed bytes is {digest}, expected {sha256}. The "
                "file is corrupt or not the Fashion-MNIST release; delete it and get it again. "
                + HOW_TO_GET
            )
    array = parse_idx(data, name=str(path))
    if ndim is not None and array.ndim != ndim:
        raise IdxError(f"{path}: has {array.ndim} dimensions {array.shape}, expected {ndim}.")
    return array


# ---------------------------------------------------------------------------------------------
# Finding the files


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def files_in(folder: str | os.PathLike) -> dict[str, Path] | None:
    """{name: path} of the four files in `folder` (plain or .gz); None unless all four are there."""
    folder = Path(folder)
    found = {name: _file_in(folder, name) for name in FILE_NAMES}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


def debian_package_dirs() -> list[Path]:
    """Folders where Debian's `dataset-fashion-mnist` installed the files, found at run time.

    Asks dpkg for the package's file list; falls back to the standard share folders.
    """
    folders: list[Path] = []
    dpkg = shutil.which("dpkg")
    if dpkg:
        try:
            listing = subprocess.run(
                [dpkg, "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=20
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if Path(line).name.startswith("train-images-idx3-ubyte"):
                folders.append(Path(line).parent)
    for pattern in (
        "/usr/share/datasets/fashion-mnist*",
        "/usr/local/share/datasets/fashion-mnist*",
    ):
        folders.extend(Path(p) for p in sorted(glob.glob(pattern)))
    return list(dict.fromkeys(folders))


def system_locations_allowed() -> bool:
    """False when $LTWEIGHTS_NO_SYSTEM_DATA is set (to anything but "", "0"): no Debian folder, no
    cache, no download."""
    return os.environ.get(NO_SYSTEM_DATA_ENV, "") in ("", "0")


def candidate_dirs(
    data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> list[tuple[str, Path]]:
    """(source, folder) pairs in search order: data_dir, $LTWEIGHTS_DATA, the repository's copy,
    Debian, cache (the last two unless $LTWEIGHTS_NO_SYSTEM_DATA is set)."""
    candidates: list[tuple[str, Path]] = []
    if data_dir is not None:
        candidates.append(("data_dir", Path(data_dir).expanduser()))
    if os.environ.get(DATA_ENV):
        candidates.append((DATA_ENV, Path(os.environ[DATA_ENV]).expanduser()))
    candidates.append(("repository", REPOSITORY_DIR))
    if system_locations_allowed():
        candidates.extend(("debian", folder) for folder in debian_package_dirs())
        candidates.append(("cache", fashion_mnist_cache_dir(cache_dir)))
    return candidates


def fashion_mnist_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "fashion-mnist"


def find_fashion_mnist(
    data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[str, dict[str, Path]] | None:
    """(source, {name: path}) of the first folder holding the four files, or None.

    An explicit data_dir or $LTWEIGHTS_DATA that lacks them raises FileNotFoundError.
    """
    for source, folder in candidate_dirs(data_dir, cache_dir):
        found = files_in(folder)
        if found is not None:
            return source, found
        if source in ("data_dir", DATA_ENV):
            missing = [n for n in FILE_NAMES if _file_in(folder, n) is None]
            where = "data_dir" if source == "data_dir" else f"${DATA_ENV}"
            raise FileNotFoundError(
                f"Fashion-MNIST: {where} = {folder} lacks {', '.join(missing)} (plain or .gz). "
                + HOW_TO_GET
            )
    return None


# ---------------------------------------------------------------------------------------------
# Download


def download_fashion_mnist(
    dest: str | os.PathLike,
    *,
    urls: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    opener: Callable[..., Any] = urllib.request.urlopen,
    progress: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Downloads the four .gz files into `dest`, each verified before it is renamed into place.

    A file whose checksum fails at one URL is tried at the next; nothing partial is left behind.
    Returns {name: path}. Raises ConnectionError (offline) or IdxError (bad data everywhere).
    urls and checksums default to the module's URLS and SHA256; `timeout` (seconds) bounds each
    connection attempt and read, so an offline machine fails promptly.
    """
    from tqdm.auto import tqdm

    urls = URLS if urls is None else urls
    checksums = SHA256 if checksums is None else checksums
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FILE_NAMES:
        target = dest / f"{name}.gz"
        if target.is_file():
            read_idx(target, sha256=checksums[name])
            paths[name] = target
            continue
        errors, bad_data = [], False
        for base in urls:
            url = base + f"{name}.gz"
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
                    total = response.headers.get("Content-Length") if response.headers else None
                    with tqdm(
                        total=int(total) if total else None,
                        unit="B",
                        unit_scale=True,
                        desc=f"{name}.gz",
                        disable=not progress,
                    ) as bar:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            bar.update(len(chunk))
                read_idx(tmp, sha256=checksums[name])
                os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
                os.replace(tmp, target)
                paths[name] = target
                break
            except IdxError as e:
                errors.append(f"{url}: {e}")
                bad_data = True
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {e}")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        else:
            message = f"Fashion-MNIST: could not download {name}.gz:\n  " + "\n  ".join(errors)
            if bad_data:
                raise IdxError(message)
            raise ConnectionError(message + "\n" + HOW_TO_GET)
    return paths


# ---------------------------------------------------------------------------------------------
# Loading


def read_fashion_mnist_files(
    files: Mapping[str, Path], *, checksums: Mapping[str, str] | None = SHA256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels) from {name: path}, all validated.

    Checks: SHA-256 (unless checksums is None), 3-D uint8 images of 28 x 28, 1-D uint8 labels in
    0..9, and as many labels as images.
    """
    arrays = {}
    for name in FILE_NAMES:
        ndim = 3 if "images" in name else 1
        array = read_idx(
            files[name], sha256=None if checksums is None else checksums[name], ndim=ndim
        )
        if array.dtype != np.uint8:
            raise IdxError(f"{files[name]}: holds {array.dtype}, Fashion-MNIST is uint8.")
        if ndim == 3 and array.shape[1:] != (28, 28):
            raise IdxError(f"{files[name]}: images are {array.shape[1:]}, expected (28, 28).")
        if ndim == 1 and array.size and array.max() >= len(CLASS_NAMES):
            raise IdxError(f"{files[name]}: label {array.max()} out of range 0..9.")
        arrays[name] = array
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if len(images) != len(labels):
            raise IdxError(
                f"{files[f'{split}-labels-idx1-ubyte']}: {len(labels)} labels but "
                f"{files[f'{split}-images-idx3-ubyte']} holds {len(images)} images; the pair "
                "must come from the same release."
            )
    return (
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"],
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"],
    )


@functools.lru_cache(maxsize=2)
def _read_cached(key: tuple) -> tuple[np.ndarray, ...]:
    files = {name: Path(path) for name, path, _, _ in key}
    arrays = read_fashion_mnist_files(files)
    for array in arrays:
        array.setflags(write=False)  # shared between callers
    return arrays


def load_fashion_mnist(
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> FashionMNIST:
    """Finds (or downloads), validates and decodes Fashion-MNIST. Arrays are read-only.

    Decoding takes a few hundred ms; the result is memoised per file (path, size, mtime).
    """
    found = find_fashion_mnist(data_dir, cache_dir)
    if found is None:
        if not download or not system_locations_allowed():
            raise FileNotFoundError(
                "Fashion-MNIST not found (looked in "
                + ", ".join(f"{s}: {f}" for s, f in candidate_dirs(data_dir, cache_dir))
                + "). "
                + HOW_TO_GET
            )
        files = download_fashion_mnist(fashion_mnist_cache_dir(cache_dir))
        found = ("download", files)
    source, files = found
    key = tuple(
        (name, str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
        for name, path in files.items()
    )
    train_images, train_labels, test_images, test_labels = _read_cached(key)
    provenance = {
        "dataset": "Fashion-MNIST",
        "licence": "MIT",
        "source": source,
        "files": {
            name: {"path": str(path), "sha256": SHA256[name]} for name, path in files.items()
        },
    }
    return FashionMNIST(train_images, train_labels, test_images, test_labels, provenance)
