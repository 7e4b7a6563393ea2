"""Reading the probes' exports back on the host: only regular files in the folder, safetensors and a
JSON object, of a plausible size; anything else is an error the student reads, never a crash."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from coursekit.grading import probe_data as probe
from coursekit.grading.probe_data import PROBE_NAMES, read_outputs
from coursekit.in_sandbox.protocol import OK, Status

ALL_OK = {name: OK for name in PROBE_NAMES}
FORWARD = torch.arange(6.0).reshape(2, 3)


def export(directory, name="linear", meta=None, tensors=None):
    save_file(tensors if tensors is not None else {"forward": FORWARD}, directory / f"{name}.safetensors")
    (directory / f"{name}.json").write_text(
        json.dumps(meta if meta is not None else {"forward": {"type": "torch.Tensor"}})
    )


def test_a_complete_export_is_read(tmp_path):
    export(tmp_path)
    export(tmp_path, "accuracy", {"value": {"type": "builtins.float", "value": 0.5}}, {})
    outputs = read_outputs(tmp_path, ALL_OK)
    assert set(outputs) == set(PROBE_NAMES)
    assert torch.equal(outputs["linear"].tensors["forward"], FORWARD) and outputs["linear"].error is None
    assert outputs["linear"].meta == {"forward": {"type": "torch.Tensor"}}
    assert outputs["accuracy"].meta["value"]["value"] == 0.5 and outputs["accuracy"].tensors == {}
    assert outputs["relu"].error == "the probe left no result" and outputs["relu"].meta == {}


def test_an_error_of_the_whole_probe_is_kept(tmp_path):
    export(tmp_path, meta={"error": "NameError: name 'Linear' is not defined"}, tensors={})
    assert read_outputs(tmp_path, ALL_OK)["linear"].error == "NameError: name 'Linear' is not defined"


def test_the_run_status_wins_over_what_is_in_the_folder(tmp_path):
    export(tmp_path)
    outputs = read_outputs(tmp_path, {**ALL_OK, "linear": Status("timeout", "None")})
    assert (outputs["linear"].error, outputs["linear"].tensors) == ("timeout: None", {})
    assert read_outputs(tmp_path, {})["linear"].error == "the probe did not run (the notebook did not finish)"


@pytest.mark.parametrize("which", ["json", "safetensors"])
def test_a_symlinked_export_is_refused(tmp_path, which):
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = tmp_path / "out"
    inside.mkdir()
    export(outside)
    export(inside)
    (inside / f"linear.{which}").unlink()
    (inside / f"linear.{which}").symlink_to(outside / f"linear.{which}")
    assert read_outputs(inside, ALL_OK)["linear"].error == "the probe left no result"


def test_a_symlink_is_refused_even_to_a_file_in_the_folder(tmp_path):
    export(tmp_path)
    (tmp_path / "linear.json").rename(tmp_path / "planted.json")
    (tmp_path / "linear.json").symlink_to(tmp_path / "planted.json")
    assert read_outputs(tmp_path, ALL_OK)["linear"].error == "the probe left no result"


def test_a_folder_in_place_of_an_export_is_refused(tmp_path):
    export(tmp_path)
    (tmp_path / "linear.json").unlink()
    (tmp_path / "linear.json").mkdir()
    assert read_outputs(tmp_path, ALL_OK)["linear"].error == "the probe left no result"


def test_an_implausibly_large_export_is_not_read(tmp_path, monkeypatch):
    export(tmp_path)
    size = (tmp_path / "linear.safetensors").stat().st_size
    monkeypatch.setattr(probe, "MAX_EXPORT_BYTES", size)
    assert read_outputs(tmp_path, ALL_OK)["linear"].error is None
    monkeypatch.setattr(probe, "MAX_EXPORT_BYTES", size - 1)
    assert read_outputs(tmp_path, ALL_OK)["linear"].error == "the probe's export is implausibly large"


def test_the_real_size_limit_applies(tmp_path):
    export(tmp_path)
    with open(tmp_path / "linear.json", "r+b") as handle:  # sparse: no need to write 64 MiB
        handle.truncate(probe.MAX_EXPORT_BYTES + 1)
    assert read_outputs(tmp_path, ALL_OK)["linear"].error == "the probe's export is implausibly large"


@pytest.mark.parametrize("damage, error", [
    ({"linear.json": b"{not json"}, "unreadable probe export (JSONDecodeError)"),
    ({"linear.json": b"\xff\xfe"}, "unreadable probe export (UnicodeDecodeError)"),
    ({"linear.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"}, "unreadable probe export (SafetensorError)"),
    ({"linear.safetensors": b""}, "unreadable probe export (SafetensorError)"),
    ({"linear.json": b"[1, 2]"}, "malformed probe description"),
    ({"linear.json": b'"ok"'}, "malformed probe description"),
])
def test_a_corrupt_export_is_an_error_not_a_crash(tmp_path, damage, error):
    export(tmp_path)
    for name, content in damage.items():
        (tmp_path / name).write_bytes(content)
    output = read_outputs(tmp_path, ALL_OK)["linear"]
    assert (output.error, output.tensors, output.meta) == (error, {}, {})
