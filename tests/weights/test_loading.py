import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import assert_user_error, pickle_file, run_cli
from simclr_watches.core.errors import CheckpointError
from simclr_watches.core.files import sha256_file
from simclr_watches.model import Preprocessing, default_preprocessing
from simclr_watches.model.preprocessing import CatalogBox
from simclr_watches.weights import _registry
from simclr_watches.weights._registry import REGISTRY_PATH
from simclr_watches.weights.box import DEFAULT_BOX
from simclr_watches.weights import (
    ARTIFACTS_DIR,
    DEFAULT_MODEL,
    IMAGENET_LITE0,
    download,
    export_encoder,
    imagenet_classifier,
    imagenet_lite0_state_dict,
    init_encoder,
    list_models,
    load_encoder_file,
    load_model,
    load_registry,
    read_header,
    save_encoder,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.mark.slow
def test_imagenet_weights_are_real_a_cat_is_a_cat():
    """ImageNet classes 281-285 are the domestic cats; a wrong mapping gives noise."""
    net = imagenet_classifier()
    pre = default_preprocessing("efficientnet_lite0")
    with torch.no_grad():
        probs = net(pre(Image.open(ASSETS / "chelsea.jpg").convert("RGB"))[None]).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285
    assert float(probs[281:286].sum()) > 0.6


def test_imagenet_mapping_pairs_every_tensor_by_shape():
    state = imagenet_lite0_state_dict()
    enc = init_encoder("efficientnet_lite0", "imagenet")
    assert set(state) == set(enc.backbone.state_dict())
    assert torch.equal(enc.backbone.conv_stem.weight, state["conv_stem.weight"])


def test_imagenet_only_for_lite0():
    with pytest.raises(CheckpointError, match="no offline ImageNet weights for resnet18"):
        init_encoder("resnet18", "imagenet")


def test_checkpoint_round_trip_carries_its_description(tmp_path):
    enc = init_encoder("resnet18", "random")
    pre = Preprocessing(size=96)
    path = save_encoder(tmp_path / "enc.safetensors", enc, pre, meta={"epochs": 3})
    header = read_header(path)
    assert header["arch"] == "resnet18" and header["embedding_dim"] == 512 and header["meta"] == {"epochs": 3}
    loaded, info = load_encoder_file(path)
    assert info.preprocessing == pre and info.arch == "resnet18" and len(info.sha256) == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), enc.eval()(x), atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))


def test_fp16_checkpoint_loads_as_float32(tmp_path):
    enc = init_encoder("resnet18", "random")
    path = save_encoder(tmp_path / "h.safetensors", enc, Preprocessing(), dtype=torch.float16)
    loaded, _ = load_encoder_file(path)
    assert loaded.backbone.conv1.weight.dtype == torch.float32


@pytest.mark.slow
def test_export_writes_half_precision_and_a_registry_ready_description(small_checkpoint, tmp_path):
    out = tmp_path / "ship" / "m.safetensors"
    out.parent.mkdir()
    desc = export_encoder(small_checkpoint, out, metrics={"catalog_photo": {"R@1": 0.5}})
    assert desc["sha256"] == sha256_file(out) and desc["size"] == out.stat().st_size
    assert json.loads(out.with_suffix(".json").read_text()) == desc
    assert out.stat().st_size < 0.6 * small_checkpoint.stat().st_size
    assert desc["evaluation"] == {"catalog_photo": {"R@1": 0.5}}
    again = export_encoder(small_checkpoint, out, force=True)  # re-described without metrics: same bytes
    assert again["sha256"] == desc["sha256"] and again["evaluation"] == {}
    assert read_header(out)["meta"]["exported_from"]["sha256"] == sha256_file(small_checkpoint)
    full, info_full = load_encoder_file(small_checkpoint)
    half, info_half = load_encoder_file(out)
    assert info_half.preprocessing == info_full.preprocessing and info_half.arch == "resnet18"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(full(x), half(x), atol=2e-2)
    with pytest.raises(CheckpointError, match="must end in .safetensors"):
        export_encoder(small_checkpoint, tmp_path / "m.pt")


def test_user_state_dict_init_is_strict(tmp_path):
    good = init_encoder("resnet18", "random").backbone.state_dict()
    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "good.safetensors"))
    enc = init_encoder("resnet18", str(tmp_path / "good.safetensors"))
    assert torch.equal(enc.backbone.conv1.weight, good["conv1.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: weights do not fit"):
        init_encoder("resnet18", str(tmp_path / "bad.pt"))


def test_bad_checkpoint_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        load_encoder_file(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without a simclr-watches description"):
        load_encoder_file(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a registered model name"):
        load_model(str(tmp_path / "missing.safetensors"))


@pytest.mark.slow
def test_registered_imagenet_model(imagenet_model):
    enc, info = imagenet_model
    assert info.id == IMAGENET_LITE0 and info.dim == 1280 and info.preprocessing.size == 224


@pytest.mark.slow
def test_shipped_checkpoints_match_the_registry_and_their_descriptions(tmp_path, monkeypatch):
    """For every encoder artifact entry: the registry, the file in artifacts/ and its JSON description agree, and it loads.

    Box heads have their own test (tests/weights/test_box.py).
    """
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path))  # no stray cached copy may shadow the artifact
    shipped = [e for e in load_registry().values() if e.artifact and e.kind == "encoder"]
    assert shipped
    for entry in shipped:
        path = ARTIFACTS_DIR / entry.artifact
        desc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        assert path.stat().st_size == entry.size == desc["size"] < 20_000_000
        assert sha256_file(path) == entry.sha256 == desc["sha256"]
        enc, info = load_model(entry.name)
        assert (info.id, info.arch, info.dim) == (entry.name, desc["arch"], desc["embedding_dim"])
        assert info.preprocessing.to_dict() == desc["preprocessing"]
        assert next(enc.parameters()).dtype == torch.float32  # fp16 on disk, float32 in memory


@pytest.mark.slow
def test_default_model_is_the_shipped_checkpoint_ensembled_with_its_init(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path))
    enc, info = load_model()
    shipped, init = load_registry()[DEFAULT_MODEL].members
    _, shipped_info = load_model(shipped)
    assert info.id == DEFAULT_MODEL and init == IMAGENET_LITE0
    # Plus the ImageNet member's block-4 descriptor (112 channels), recorded in what an index sidecar keeps.
    assert info.dim == 2 * 1280 + 112
    # The first member's input for the whole photo; the catalog at 160 + 288 px, the box's square at 224 px, the wider at 160.
    assert info.preprocessing == replace(shipped_info.preprocessing, catalog_sizes=(160, 288), region_sizes=(224, 160))
    assert info.to_dict()["descriptor"] == {"member": 1, "stage": 6, "power": 3.0, "weight": 0.9, "dim": 112}
    # The SimCLR run froze the stem and blocks 0-2, so the ImageNet member reuses their output.
    assert enc.shared == shipped_info.meta["config"]["model"]["frozen_stages"] == 4
    # The old default stays loadable (indexes built with it), as the plain ensemble of the same members.
    old, old_info = load_model("watches-lite0-v1-ens")
    assert old_info.dim == 2 * 1280 and "descriptor" not in old_info.to_dict() and old_info.sha256 != info.sha256
    _, attr_info = load_model("watches-lite0-v1-ens-attr")  # the former default, at 160 px throughout: another model
    assert attr_info.preprocessing == shipped_info.preprocessing and attr_info.sha256 != info.sha256
    # The default before per-square sides: the same sha256 as when its sides were one region_size (its indexes load).
    _, ms_info = load_model("watches-lite0-v1-ens-attr-ms")
    assert ms_info.preprocessing.region_sizes == (224,)
    assert ms_info.sha256 == "1c71a5c4660d0fb9a0ae352f46dd286e5899b5fc18f03c90074af430488567d6" != info.sha256


def test_ensemble_entries_are_checked_when_the_registry_is_read(tmp_path):
    file_entry = '[a]\narch = "resnet18"\nsha256 = "00"\nsize = 1\nartifact = "a.safetensors"\n'
    cases = {
        '[e]\nmembers = ["a", "nope"]\n': "member 'nope' is not a registered weights file",
        '[e]\nmembers = ["a"]\n': "needs at least two members",
        '[e]\nmembers = ["a", "a"]\nsha256 = "00"\n': "has no file, arch, sha256 or size of its own",
        '[e]\nmembers = ["a", "a"]\n[f]\nmembers = ["e", "a"]\n': "member 'e' is not a registered weights file",
        '[g]\narch = "resnet18"\nartifact = "g.safetensors"\n': "needs arch, sha256 and size",
        '[e]\nmembers = ["a", "a"]\ndescriptor = { member = 1 }\n': "descriptor needs exactly member, stage, power, weight",
        '[g]\ndescriptor = { member = 1, stage = 6, power = 3.0, weight = 0.5 }\n' + file_entry[3:]:
            "only an ensemble .members. can have a descriptor",
        '[g]\ncatalog_sizes = [288]\n' + file_entry[3:]: "only an ensemble .members. sets catalog_sizes or region_sizes",
        '[g]\ncatalog_box = { head = "h", square = 1.3, size = 224 }\n' + file_entry[3:]:
            "only an ensemble .members. has a catalog_box, of exactly head, square and size",
        '[e]\nmembers = ["a", "a"]\ncatalog_box = { head = "h", size = 224 }\n':
            "only an ensemble .members. has a catalog_box, of exactly head, square and size",
    }
    for text, message in cases.items():
        (tmp_path / "w.toml").write_text(file_entry + text)
        with pytest.raises(CheckpointError, match=message):
            load_registry(tmp_path / "w.toml")
    (tmp_path / "w.toml").write_text(file_entry + '[e]\nmembers = ["a", "a"]\n')
    assert load_registry(tmp_path / "w.toml")["e"].members == ("a", "a")


def test_a_catalog_box_model_records_its_box_head_in_its_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "cache"))
    name = "watches-lite0-v1-ens-attr-ms2-cbox"
    _, info = load_model(name)
    _, plain = load_model("watches-lite0-v1-ens-attr-ms2")
    assert info.preprocessing == replace(plain.preprocessing, catalog_box=CatalogBox(DEFAULT_BOX, 1.3, 224))
    assert info.sha256 != plain.sha256 and info.dim == plain.dim
    # Another box head (its sha256) makes another catalog, so another model: an index built with one refuses the other.
    text = REGISTRY_PATH.read_text(encoding="utf-8")
    head_sha = load_registry()[DEFAULT_BOX].sha256
    (tmp_path / "w.toml").write_text(text.replace(head_sha, "0" * 64), encoding="utf-8")
    monkeypatch.setattr(_registry, "REGISTRY_PATH", tmp_path / "w.toml")
    assert load_model(name)[1].sha256 != info.sha256
    (tmp_path / "w.toml").write_text(text.replace('head = "watches-lite0-v1-box"', 'head = "watches-lite0-v1"'), encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"{name}: catalog_box head 'watches-lite0-v1' is no registered box head"):
        load_model(name)
    (tmp_path / "w.toml").write_text(text.replace("square = 1.3", "square = 40.0"), encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"{name}: catalog_box.square: expected a number in \[0.5, 4\], got 40.0"):
        load_model(name)


@pytest.fixture
def ensemble_registry(use_registry, tmp_path, monkeypatch):
    """``use(files, members)``: a registry of artifact entries for ``files`` plus the ensemble ``pair`` of ``members``."""
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path / "cache"))

    def use(files: dict[str, Path], members: tuple[str, ...], **sides: int) -> None:
        entries = {n: {"arch": "resnet18", "sha256": sha256_file(p), "size": p.stat().st_size, "artifact": p.name}
                   for n, p in files.items()}
        use_registry({**entries, "pair": {"members": list(members), **sides}}, tmp_path)

    return use


def _resnet_file(path: Path, seed: int, pre: Preprocessing) -> Path:
    torch.manual_seed(seed)
    return save_encoder(path, init_encoder("resnet18", "random"), pre)


@pytest.mark.slow
def test_ensemble_entry_loads_its_members_as_one_encoder(tmp_path, ensemble_registry):
    files = {"a": _resnet_file(tmp_path / "a.safetensors", 0, Preprocessing(size=64)),
             "b": _resnet_file(tmp_path / "b.safetensors", 1, Preprocessing(size=96))}
    ensemble_registry(files, ("a", "b"))
    enc, info = load_model("pair")
    a, info_a = load_model("a")
    b, info_b = load_model("b")
    assert (info.id, info.dim, info.arch) == ("pair", 1024, "resnet18+resnet18")
    assert info.preprocessing == info_a.preprocessing  # the first member's input
    assert info.to_dict()["members"] == [info_a.to_dict(), info_b.to_dict()]  # what an index sidecar records
    assert info.sha256 not in (info_a.sha256, info_b.sha256)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x), torch.cat([a(x), b(x)], 1) / 2**0.5, atol=1e-5)
    # The digest follows the members: another order (or other weights) is another model.
    ensemble_registry(files, ("b", "a"))
    assert load_model("pair")[1].sha256 != info.sha256
    # ... and so do the sides at which it sees the catalog and a query's regions.
    ensemble_registry(files, ("a", "b"), catalog_sizes=[64, 96], region_sizes=[80])
    _, sided = load_model("pair")
    assert sided.preprocessing == replace(info.preprocessing, catalog_sizes=(64, 96), region_sizes=(80,))
    assert sided.preprocessing.catalog_sides == (64, 96) and sided.sha256 != info.sha256
    ensemble_registry(files, ("a", "b"), region_sizes=[4])  # checked as a checkpoint's would be, in one line
    with pytest.raises(CheckpointError, match=r"pair: region_sizes\[0\]: expected an integer in \[8, 1024\], got 4"):
        load_model("pair")
    rows = {m["name"]: m for m in list_models()}
    assert rows["pair"]["status"] == "ready" and rows["pair"]["size"] == rows["a"]["size"] + rows["b"]["size"]
    with pytest.raises(CheckpointError, match="pair: an ensemble of a, b, with no file of its own"):
        download("pair", progress=False)
    with pytest.raises(CheckpointError, match="pair: an ensemble of a, b, with no file of its own"):
        download("pair", url="http://127.0.0.1:9/pair.safetensors", sha256="0" * 64, progress=False)
    assert not (tmp_path / "cache").exists()  # nothing was fetched or saved under the ensemble's name


@pytest.mark.slow
def test_ensemble_errors_name_the_member(tmp_path, ensemble_registry):
    files = {"a": _resnet_file(tmp_path / "a.safetensors", 0, Preprocessing(size=64)),
             "b": _resnet_file(tmp_path / "b.safetensors", 1, default_preprocessing("resnet18", 64))}
    ensemble_registry(files, ("a", "b"))
    with pytest.raises(CheckpointError, match="pair: members a and b normalise their input differently"):
        load_model("pair")
    files["b"].unlink()
    rows = {m["name"]: m for m in list_models()}
    assert rows["pair"]["status"].startswith("member b: b: registered, but not downloaded")
    with pytest.raises(CheckpointError, match="b: registered, but not downloaded"):
        load_model("pair")


@pytest.mark.slow
def test_a_plus_b_is_the_same_ensemble_without_a_registry_entry(tmp_path, monkeypatch, ensemble_registry):
    files = {"a": _resnet_file(tmp_path / "a.safetensors", 0, Preprocessing(size=64)),
             "b": _resnet_file(tmp_path / "b.safetensors", 1, Preprocessing(size=96))}
    ensemble_registry(files, ("a", "b"))
    monkeypatch.chdir(tmp_path)
    enc, info = load_model("a.safetensors+b")
    pair, pair_info = load_model("pair")
    # Same members, same weights: an index built with one is accepted by the other.
    assert info.sha256 == pair_info.sha256 and info.dim == pair_info.dim
    assert info.id == f"{files['a'].resolve()}+b"  # loads again from any working directory
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(enc(x), pair(x))
    for spec, message in [("a+", "an ensemble needs two or more members"),
                          ("a+nope", "nope: neither a checkpoint file nor a registered model name"),
                          ("pair+a", "member pair is itself an ensemble")]:
        with pytest.raises(CheckpointError, match=message):
            load_model(spec)


# Issue 12: a checkpoint's description is validated whole; a pickle is refused in one line.


def _described(path: Path, description) -> Path:
    """A safetensors file whose simclr-watches description is ``description`` (a dict as JSON, or raw text)."""
    text = description if isinstance(description, str) else json.dumps(description)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"simclr_watches": text})
    return path


GOOD_DESCRIPTION = {"format": "simclr-watches-encoder", "format_version": 1, "arch": "resnet18", "embedding_dim": 512,
                    "preprocessing": Preprocessing(size=64).to_dict(), "meta": {}}


@pytest.mark.parametrize("change, message", [
    ("{not json", "description is not valid JSON"),
    pytest.param("[" * 100_000 + "]" * 100_000, "description is not valid JSON", id="nested-too-deeply"),
    ("[1, 2]", "description is not a JSON object"),
    ({"format": "other"}, "field 'format' is 'other'"),
    ({"format_version": "1"}, "field 'format_version' must be a positive integer, got '1'"),
    ({"format_version": 7}, "checkpoint format v7 is newer than this program reads"),
    ({"arch": None}, "field 'arch' is None, not one of efficientnet_lite0"),
    ({"arch": ["resnet18"]}, "field 'arch' is ['resnet18']"),
    ({"arch": "vit"}, "field 'arch' is 'vit'"),
    ({"embedding_dim": 128}, "field 'embedding_dim' is 128, but resnet18 embeds in 512 dimensions"),
    ({"preprocessing": None}, "field 'preprocessing' is invalid"),
    ({"preprocessing": {"size": 64}}, "field 'preprocessing' is invalid"),
    ({"meta": [1]}, "field 'meta' must be a JSON object, got list"),
])
def test_every_field_of_a_checkpoint_description_is_checked(tmp_path, change, message):
    description = change if isinstance(change, str) else {**GOOD_DESCRIPTION, **change}
    path = _described(tmp_path / "c.safetensors", description)
    for read in (read_header, load_encoder_file):
        with pytest.raises(CheckpointError, match=re.escape(message)) as err:
            read(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_missing_arch_and_preprocessing_are_named(tmp_path):
    for key in ("arch", "preprocessing"):
        desc = {k: v for k, v in GOOD_DESCRIPTION.items() if k != key}
        with pytest.raises(CheckpointError, match=f"field '{key}' is"):
            read_header(_described(tmp_path / f"no-{key}.safetensors", desc))


def test_weights_holding_nan_are_refused(small_checkpoint, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(small_checkpoint))
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path), metadata={"simclr_watches": json.dumps(GOOD_DESCRIPTION)})
    with pytest.raises(CheckpointError, match="tensor conv1.weight holds NaN or infinite values"):
        load_encoder_file(path)


def test_a_pickle_is_refused_in_one_line_without_running_it(tmp_path):
    path = pickle_file(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        init_encoder("resnet18", str(path))
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message
    assert message.startswith(f"{path}: refused as weights") and "only safetensors files and torch files saved with weights only" in message
    assert not (tmp_path / "ran").exists()
    (tmp_path / "torn.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="torn.pt: refused as weights|torn.pt: cannot read weights"):
        init_encoder("resnet18", str(tmp_path / "torn.pt"))


@pytest.mark.slow
def test_cli_bad_checkpoints_are_one_line_errors(make_catalog, tmp_path):
    no_arch = _described(tmp_path / "noarch.safetensors", {k: v for k, v in GOOD_DESCRIPTION.items() if k != "arch"})
    proc = run_cli("build-index", make_catalog(1), "--out", tmp_path / "idx", "--checkpoint", no_arch)
    assert_user_error(proc, f"{no_arch}: checkpoint description field 'arch' is None")
    not_json = _described(tmp_path / "notjson.safetensors", "{not json")
    assert_user_error(run_cli("info", not_json), f"{not_json}: its simclr-watches description is not valid JSON")


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable safetensors checkpoint"),
    (b"garbage" * 10, "not a readable safetensors checkpoint"),
    (None, "not a readable safetensors checkpoint"),  # a pickle
])
def test_cli_info_on_a_file_that_is_no_checkpoint(tmp_path, content, message):
    from typer.testing import CliRunner

    from simclr_watches.cli import app

    path = tmp_path / "f.safetensors"
    pickle_file(path) if content is None else path.write_bytes(content)
    res = CliRunner().invoke(app, ["info", str(path)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and f"{path}: {message}" in res.stderr


# Issue 13: a cold start reads what it needs once and builds nothing it throws away.


def _calls_during(functions, run):
    """``run()``'s result and, for each of ``functions``, the arguments of every call it made to it.

    Calls are told apart by the function's code, so a call counts however the caller imported it.
    """
    codes = {f.__code__: f for f in functions}
    calls = {f: [] for f in functions}

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            calls[codes[frame.f_code]].append(dict(frame.f_locals))

    sys.setprofile(profile)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    return result, calls


def test_default_model_cold_start_parses_the_registry_once_and_hashes_each_file_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_WATCHES_HOME", str(tmp_path))
    (enc, info), calls = _calls_during([load_registry, sha256_file, torch.nn.init.normal_], load_model)
    assert info.id == DEFAULT_MODEL and len(info.meta["members"]) == 2
    hashed = [Path(c["path"]).name for c in calls[sha256_file]]
    assert sorted(hashed) == sorted(set(hashed)) and len(hashed) == 2, hashed  # the two members' files, once each
    assert len(calls[load_registry]) == 1
    assert calls[torch.nn.init.normal_] == []  # no randomly initialised network, to be overwritten or thrown away
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in enc.parameters())
