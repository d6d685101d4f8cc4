"""Downloads of the public image data sets: mirrors, pinned SHA-256 sums, the cache folder, extraction."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from bigtrain.data import image_formats as fmt
from bigtrain.data.download import download_file
from bigtrain.errors import UserError

# source -> (mirrors tried in order, {file name: SHA-256}); the sums are those published with the files
# (also pinned by TensorFlow Datasets) and checked by bigtrain.data.download before a file is kept.
DOWNLOADS: dict[str, tuple[list[str], dict[str, str]]] = {
    "mnist": (
        [
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ],
        {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion-mnist": (
        [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ],
        {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ),
    "cifar10": (
        ["https://www.cs.toronto.edu/~kriz/"],
        {"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
    ),
}


def default_cache(source: str) -> Path:
    """Where downloads go when `data.path` is not set: $XDG_CACHE_HOME (or ~/.cache)/bigtrain/<source>."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "bigtrain" / source


def _fetch_one(source: str, name: str, sha256: str, root: Path) -> Path:
    """Download one file of `source` into `root`, trying each mirror in turn."""
    mirrors, _ = DOWNLOADS[source]
    failures = []
    for base in mirrors:
        try:
            return download_file(base + name, root / name, sha256)
        except UserError as err:
            failures.append(str(err))
    raise UserError(f"download of {name} for data.source={source} failed: {' | '.join(failures)}")


def _extract_cifar10(archive: Path, root: Path) -> None:
    """Unpack the CIFAR-10 batches next to the archive; a half-finished extraction is never left behind."""
    with (
        tempfile.TemporaryDirectory(dir=root, prefix=".extract.") as tmp,
        tarfile.open(archive, "r:gz") as tar,
    ):
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(fmt.CIFAR10_FOLDER + "/")]
        tar.extractall(tmp, members=members, filter="data")
        target = root / fmt.CIFAR10_FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / fmt.CIFAR10_FOLDER, target)


def fetch(source: str, root: Path) -> None:
    """Make the files of a downloadable source present in `root` (no-op when they already are)."""
    if root.exists() and not root.is_dir():
        raise UserError(f"data.path {root} is a file; data.source={source} downloads into a folder")
    root.mkdir(parents=True, exist_ok=True)
    if source == "cifar10":
        folder = root / fmt.CIFAR10_FOLDER
        if all((folder / n).is_file() for n in [*fmt.CIFAR10_TRAIN, fmt.CIFAR10_TEST]):
            return
        ((name, sha256),) = DOWNLOADS[source][1].items()
        _extract_cifar10(_fetch_one(source, name, sha256, root), root)
        return
    for name, sha256 in DOWNLOADS[source][1].items():
        if not (root / name.removesuffix(".gz")).is_file():
            _fetch_one(source, name, sha256, root)
