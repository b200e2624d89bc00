"""Tests of helpers.models' model files: saves are atomic, and load refuses pairs that lie."""
import json

import pytest
import torch

from helpers import models, nca


def trained(seed: int, **options) -> nca.NCA:
    """A model with random (not near-zero) weights, so two seeds are easy to tell apart."""
    torch.manual_seed(seed)
    model = nca.NCA(**options)
    with torch.no_grad():
        model.update.weight.normal_()
        model.update.bias.normal_()
    return model


def same_weights(a: nca.NCA, b: nca.NCA) -> bool:
    return all(torch.equal(a.state_dict()[key], b.state_dict()[key]) for key in a.state_dict())


def write_pair(path, weights, info) -> None:
    """Write NAME.pt and NAME.json by hand, as another program (or an older save) would."""
    torch.save(weights, path)
    path.with_suffix(".json").write_text(json.dumps(info))


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- atomic saves

def test_the_json_records_the_hash_of_the_weights_and_old_files_without_it_load_with_a_warning(tmp_path):
    model = trained(0)
    path = models.save(model, tmp_path / "m.pt")
    info = models.load_metadata(path)
    assert set(info) >= {"architecture", "config", "parameters", "saved", "format_version", "weights_sha256"}
    assert info["weights_sha256"] == models.pair_hash(path.read_bytes(), info["config"])
    del info["weights_sha256"], info["format_version"]          # a file saved before the hash was recorded
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="m.json predates weight hashes.*upgrade_format"):
        assert same_weights(models.load(path), model)


def test_a_pt_replaced_alone_is_refused(tmp_path):
    path = models.save(trained(0), tmp_path / "x.pt")
    torch.save(trained(1).state_dict(), path)          # same architecture, other weights
    with pytest.raises(ValueError, match="x.pt does not match x.json: the pair is from two different saves"):
        models.load(path)


def test_metadata_that_is_not_json_raises_before_anything_is_written(tmp_path):
    first = trained(0)
    path = models.save(first, tmp_path / "x.pt", {"note": "first"})
    with pytest.raises(TypeError, match="JSON-serializable.*nothing was written"):
        models.save(trained(1), path, {"note": object()})
    assert same_weights(models.load(path), first) and models.load_metadata(path)["note"] == "first"
    with pytest.raises(TypeError, match="metadata must be a dict"):
        models.save(trained(1), path, ["note"])
    with pytest.raises(ValueError, match="may not set"):
        models.save(trained(1), path, {"config": {"channels": 24}})


def test_a_save_killed_while_writing_the_weights_leaves_the_previous_pair(tmp_path, monkeypatch):
    first = trained(0)
    path = models.save(first, tmp_path / "x.pt", {"note": "first"})
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        # write a torch file's first bytes, then die (a killed process, a full disk)
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04partial")
        else:
            with open(f, "wb") as file:
                file.write(b"PK\x03\x04partial")
        raise OSError("killed mid-save")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="killed mid-save"):
        models.save(trained(1), path, {"note": "second"})
    monkeypatch.setattr(torch, "save", real_save)
    assert same_weights(models.load(path), first) and models.load_metadata(path)["note"] == "first"
    assert leftovers(tmp_path) == []


def test_a_save_killed_before_or_between_the_renames_loads_no_mixed_pair_and_keeps_the_new_one(tmp_path, monkeypatch):
    first = trained(0)
    path = models.save(first, tmp_path / "x.pt", {"note": "first"})
    real_replace = models.os.replace
    calls = []

    def dies_at(call):
        def replace(source, destination):
            calls.append(destination)
            if len(calls) == call:
                raise OSError("killed mid-save")
            real_replace(source, destination)
        return replace

    # killed before anything is renamed: the previous pair, untouched, no temporary files left
    monkeypatch.setattr(models.os, "replace", dies_at(1))
    with pytest.raises(OSError):
        models.save(trained(1), path, {"note": "second"})
    assert same_weights(models.load(path), first) and models.load_metadata(path)["note"] == "first"
    assert leftovers(tmp_path) == []
    # stopped between the two renames: the new JSON beside the old weights, the new weights in a temporary
    # that the error names; load finds them by the JSON's hash and finishes the save: the new pair, whole
    calls.clear()
    monkeypatch.setattr(models.os, "replace", dies_at(2))
    with pytest.raises(OSError, match=r"stopped between its files.*x\.pt is still in .*\.x\.pt\..*\.tmp"):
        models.save(trained(1), path, {"note": "second"})
    monkeypatch.setattr(models.os, "replace", real_replace)
    with pytest.warns(UserWarning, match="finished a save that was stopped between its two files"):
        assert same_weights(models.load(path), trained(1)) and models.load_metadata(path)["note"] == "second"
    assert leftovers(tmp_path) == []
    # the old weights put back beside the new JSON, with no temporary to finish: a mixed pair, refused
    torch.save(first.state_dict(), path)
    with pytest.raises(ValueError, match="two different saves"):
        models.load(path)


def test_non_finite_weights_are_not_saved(tmp_path):
    first = trained(0)
    path = models.save(first, tmp_path / "x.pt")
    model = trained(1)
    with torch.no_grad():
        model.update.bias[3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        models.save(model, path)
    assert same_weights(models.load(path), first)


# ----------------------------------------------------------------------------- files that lie

def info_for(model: nca.NCA) -> dict:
    return {"architecture": "NCA", "config": model.config(), "parameters": 588}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    model = trained(0)
    weights = model.state_dict()
    weights["update.weight"][0, 0, 0, 0] = bad
    write_pair(tmp_path / "x.pt", weights, info_for(model))
    with pytest.raises(ValueError, match="update.weight holds non-finite values"):
        models.load(tmp_path / "x.pt")


def test_filters_that_contradict_the_config_are_refused(tmp_path):
    # a side-filter model whose JSON claims the Laplacian/Sobel filters (a hash-consistent pair)
    path = models.save(trained(0, filters="side"), tmp_path / "x.pt")
    info = models.load_metadata(path)
    info["config"]["filters"] = "laplacian_sobel"
    info["weights_sha256"] = models.pair_hash(path.read_bytes(), info["config"])     # re-hashed by hand
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="perception filters are not the 'laplacian_sobel' filters"):
        models.load(path)
    # hand-edited filters in an old-style pair (no hash)
    model = trained(0)
    weights = model.state_dict()
    weights["filters"][0, 0, 1, 1] = 5.0
    write_pair(tmp_path / "y.pt", weights, info_for(model))
    with pytest.raises(ValueError, match="perception filters"):
        models.load(tmp_path / "y.pt")


@pytest.mark.parametrize("text, found", [("[1, 2]", "JSON list"), ('"NCA"', "JSON str"), ("3", "JSON int"),
                                         ("{not json", "not valid JSON")])
def test_a_json_that_is_not_an_object_is_refused(tmp_path, text, found):
    model = trained(0)
    write_pair(tmp_path / "x.pt", model.state_dict(), {})
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(ValueError, match=found):
        models.load(tmp_path / "x.pt")


def test_a_config_that_is_not_an_object_is_refused(tmp_path):
    write_pair(tmp_path / "x.pt", trained(0).state_dict(), {"config": [12, True]})
    with pytest.raises(ValueError, match="'config' must be an object"):
        models.load(tmp_path / "x.pt")


def test_a_config_with_bad_option_types_is_refused(tmp_path):
    model = trained(0)
    write_pair(tmp_path / "x.pt", model.state_dict(), {"config": {**model.config(), "split_relu": "no"}})
    with pytest.raises(TypeError, match="split_relu"):
        models.load(tmp_path / "x.pt")


def foreign_files():
    weights = trained(0).state_dict()
    optimizer = torch.optim.Adam(trained(0).parameters()).state_dict()
    return {
        "list": (list(weights.values()), "holds a list, not a model's state_dict"),
        "tensor": (weights["update.weight"], "holds a single tensor"),
        "checkpoint": ({"model": weights, "optimizer": optimizer, "iteration": 3}, "looks like a training checkpoint"),
        "wrapped": ({"state_dict": weights}, "looks like a training checkpoint"),
        "not tensors": ({**weights, "update.bias": [0.0] * 12}, "not tensors"),
    }


@pytest.mark.parametrize("kind", list(foreign_files()))
def test_a_pt_that_is_not_a_state_dict_is_one_clear_error(tmp_path, kind):
    content, message = foreign_files()[kind]
    write_pair(tmp_path / "x.pt", content, info_for(trained(0)))
    with pytest.raises(ValueError, match=message) as error:
        models.load(tmp_path / "x.pt")
    assert "helpers.models.save" in str(error.value)


def test_a_truncated_pt_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pt"
    write_pair(path, trained(0).state_dict(), info_for(trained(0)))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read as saved weights"):
        models.load(path)
