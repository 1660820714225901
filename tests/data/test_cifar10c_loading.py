"""Loading CIFAR-10-C: the release's folder / tar, rows read by ``datasets``, and Hub mirrors over real HTTP."""

import tarfile

import numpy as np
import pytest
from hub_server import Repo
from huggingface_hub import constants

from timm_introspect import DataError
from timm_introspect.data.cifar10c import load_cifar10c, load_official, write_official


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A small set in the release's layout: 8 images, 3 corruptions."""
    rng = np.random.default_rng(0)
    base = rng.integers(20, 230, (8, 4, 4, 3)).astype(np.uint8)
    images = np.kron(base, np.ones((1, 8, 8, 1), dtype=np.uint8))
    labels = np.arange(8) % 10
    folder = tmp_path_factory.mktemp("release") / "CIFAR-10-C"
    written = write_official(folder, images, labels, corruptions=("contrast", "fog", "gaussian_noise"), progress=False)
    return folder, images, labels, written["md5"]


def test_same_seed_same_files_and_resume(release, tmp_path):
    folder, images, labels, sums = release
    # each corruption has its own seeded generator: fog alone gives the same file as fog among others
    alone = write_official(tmp_path / "alone", images, labels, corruptions=("fog",), progress=False)
    assert alone["md5"]["fog.npy"] == sums["fog.npy"]
    other = write_official(tmp_path / "other", images, labels, corruptions=("fog",), seed=1, progress=False)
    assert other["md5"]["fog.npy"] != sums["fog.npy"]
    # run again with more corruptions: the finished file is kept, the new ones are made
    before = (tmp_path / "alone" / "fog.npy").stat().st_mtime_ns
    more = write_official(tmp_path / "alone", images, labels, corruptions=("contrast", "fog", "gaussian_noise"),
                          progress=False)
    assert more["reused"] == ["fog"] and set(more["seconds"]) == {"contrast", "gaussian_noise"}
    assert (tmp_path / "alone" / "fog.npy").stat().st_mtime_ns == before
    assert more["md5"] == sums
    # a damaged file, or other settings, is made again
    (tmp_path / "alone" / "fog.npy").write_bytes(b"broken")
    again = write_official(tmp_path / "alone", images, labels, corruptions=("fog",), progress=False)
    assert again["reused"] == [] and again["md5"]["fog.npy"] == sums["fog.npy"]
    reseeded = write_official(tmp_path / "alone", images, labels, corruptions=("fog",), seed=1, progress=False)
    assert reseeded["reused"] == [] and reseeded["md5"]["fog.npy"] == other["md5"]["fog.npy"]


def test_only_the_requested_files_are_read(release, tmp_path):
    folder, images, labels, sums = release
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in folder.glob("*.npy"):
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "contrast.npy").write_bytes(b"not an array")  # never read when only fog is asked for
    data, lab = load_official(copy, corruptions=("fog",), md5=sums)
    assert list(data) == ["fog"] and data["fog"].shape == (40, 32, 32, 3)
    assert np.array_equal(lab, np.tile(labels, 5))
    with pytest.raises(ValueError, match="contrast.npy .* not a readable .npy"):
        load_official(copy)


def test_generator_never_mixes_sets(release, tmp_path):
    folder, images, labels, sums = release
    out = tmp_path / "set"
    write_official(out, images, labels, corruptions=("contrast", "fog"), progress=False)
    # other images: the earlier files go, the new ones come; nothing of the first set is left to mislabel
    write_official(out, images[::-1].copy(), labels[::-1].copy(), corruptions=("contrast",), progress=False)
    assert sorted(p.name for p in out.glob("*.npy")) == ["contrast.npy", "labels.npy"]
    data, lab = load_official(out)
    assert list(data) == ["contrast"] and np.array_equal(lab, np.tile(labels[::-1], 5))
    # a folder with someone else's files is refused
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "fog.npy", np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="not written by this generator"):
        write_official(other, images, labels, corruptions=("contrast",), progress=False)


def test_a_crafted_manifest_never_deletes_files_outside_the_folder(release, tmp_path):
    """Issue 15.1: only the generator's own files, by their known names, inside --out are ever deleted."""
    import json

    _, images, labels, _ = release
    out = tmp_path / "out"
    out.mkdir()
    victims = [tmp_path / "victim.npy", tmp_path / "elsewhere" / "victim.txt"]
    victims[1].parent.mkdir()
    for v in victims:
        v.write_bytes(b"precious")
    (out / "notes.txt").write_text("mine")
    manifest = {"settings": {"seed": 99}, "files": {"../victim.npy": "x", str(victims[1]): "y", "notes.txt": "z"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_official(out, images, labels, corruptions=("contrast",), progress=False)
    assert all(v.read_bytes() == b"precious" for v in victims) and (out / "notes.txt").read_text() == "mine"
    for damaged in ("{not json", "[1, 2]", '{"files": ["../victim.npy"]}'):
        # a damaged manifest cannot vouch for contrast.npy: the folder is refused, nothing is deleted
        (out / "manifest.json").write_text(damaged)
        with pytest.raises(DataError, match="not written by this generator"):
            write_official(out, images, labels, corruptions=("contrast",), progress=False)
        assert victims[0].read_bytes() == b"precious" and (out / "contrast.npy").is_file()


def test_damaged_files_are_refused(release, tmp_path):
    folder, *_ = release
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in folder.glob("*.npy"):
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "fog.npy").write_bytes((folder / "fog.npy").read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="fog.npy .* not a readable .npy"):
        load_official(broken, corruptions=("fog",))
    np.save(broken / "fog.npy", np.zeros((40, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="layout is uint8"):
        load_official(broken, corruptions=("fog",))
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        tar.add(folder, arcname="CIFAR-10-C")
    assert load_official(tmp_path / "c.tar", corruptions=("contrast",))[0]["contrast"].shape == (40, 32, 32, 3)
    with pytest.raises(ValueError, match="archive is corrupted or incomplete"):
        load_official(tmp_path / "c.tar", md5="0" * 32)
    with pytest.raises(ValueError, match="neither a folder of .npy files nor a tar"):
        load_official(tmp_path / "nothing.tar")


def rows_dataset(release, index=True):
    """The set as rows (image, label, corruption_name, corruption_level[, index]), shuffled."""
    import datasets
    from PIL import Image

    folder, images, labels, _ = release
    rows = {"image": [], "label": [], "corruption_name": [], "corruption_level": [], "index": []}
    for c in ("contrast", "fog"):
        arr = np.load(folder / f"{c}.npy")
        for i, img in enumerate(arr):
            rows["image"].append(Image.fromarray(img))
            rows["label"].append(int(labels[i % len(labels)]))
            rows["corruption_name"].append(c)
            rows["corruption_level"].append(i // len(labels) + 1)
            rows["index"].append(i % len(labels))
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).shuffle(seed=0)
    return ds if index else ds.remove_columns("index")


def test_rows_with_corruption_columns(release, tmp_path):
    folder, *_ = release
    rows_dataset(release).to_parquet(str(tmp_path / "rows" / "test-00000-of-00001.parquet"))
    data, lab = load_cifar10c(tmp_path / "rows", cache_dir=tmp_path / "hf")
    ref, ref_labels = load_official(folder, corruptions=("contrast", "fog"))
    assert set(data) == {"contrast", "fog"} and np.array_equal(lab, ref_labels)
    assert all(np.array_equal(data[c], ref[c]) for c in data)  # PNG is lossless; the index restores the order
    with pytest.raises(ValueError, match="no rows of 'snow'"):
        load_cifar10c(tmp_path / "rows", corruptions=("snow",), cache_dir=tmp_path / "hf")
    rows_dataset(release, index=False).to_parquet(str(tmp_path / "shuffled" / "test-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match="need an index column"):
        load_cifar10c(tmp_path / "shuffled", cache_dir=tmp_path / "hf")


def test_hub_mirror_of_the_release(release, hub, monkeypatch):
    folder, images, labels, sums = release
    hub.state.repos["datasets/tester/cifar10-c"] = Repo(
        files={f"CIFAR-10-C/{p.name}": p.read_bytes() for p in folder.glob("*.npy")} | {"README.md": b"# mirror"},
        commits=["a" * 40])
    data, lab = load_cifar10c("tester/cifar10-c", corruptions=("fog",), md5=sums)
    assert np.array_equal(data["fog"], np.load(folder / "fog.npy")) and np.array_equal(lab, np.tile(labels, 5))
    fetched = [p for m, p in hub.state.requests if m == "GET" and p.endswith(".npy")]
    assert sorted(p.rsplit("/", 1)[1] for p in fetched) == ["fog.npy", "labels.npy"]  # only what was asked for
    with pytest.raises(ValueError, match="expected 0+"):
        load_cifar10c("tester/cifar10-c", corruptions=("fog",), md5={"fog.npy": "0" * 32})
    # offline, from the cache, without a request
    hub.state.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    data_offline, _ = load_cifar10c("tester/cifar10-c", corruptions=("fog",))
    assert np.array_equal(data_offline["fog"], data["fog"]) and hub.state.requests == []
    with pytest.raises(ValueError, match="not in the cache"):
        load_cifar10c("tester/cifar10-c", corruptions=("contrast",))


def test_hub_rows_through_datasets(release, hub, tmp_path):
    folder, *_ = release
    rows_dataset(release).to_parquet(str(tmp_path / "rows.parquet"))
    hub.state.repos["datasets/tester/cifar10-c-rows"] = Repo(
        files={"data/test-00000-of-00001.parquet": (tmp_path / "rows.parquet").read_bytes()}, commits=["b" * 40])
    data, lab = load_cifar10c("tester/cifar10-c-rows", corruptions=("fog",), cache_dir=tmp_path / "hf")
    assert np.array_equal(data["fog"], np.load(folder / "fog.npy"))
    path = "/datasets/tester/cifar10-c-rows/resolve/" + "b" * 40 + "/data/test-00000-of-00001.parquet"
    assert ("GET", path) in hub.state.requests


def test_rows_need_equal_severity_blocks(release, tmp_path):
    ds = rows_dataset(release)
    ds = ds.filter(lambda row: not (row["corruption_level"] == 2 and row["index"] < 3))  # 3 images lack severity 2
    ds.to_parquet(str(tmp_path / "uneven" / "test-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=r"\[8, 5, 8, 8, 8\] rows at severities 1-5"):
        load_cifar10c(tmp_path / "uneven", corruptions=("fog",), cache_dir=tmp_path / "hf")


def test_unknown_hub_repo_or_revision(release, hub):
    folder, *_ = release
    hub.state.repos["datasets/tester/cifar10-c"] = Repo(
        files={p.name: p.read_bytes() for p in folder.glob("*.npy")}, commits=["c" * 40])
    with pytest.raises(ValueError, match="has no revision 'v9'"):
        load_cifar10c("tester/cifar10-c", corruptions=("fog",), revision="v9")


def test_unknown_hub_repo(hub):
    with pytest.raises(ValueError, match="neither a local path nor a dataset repo"):
        load_cifar10c("tester/no-such-set")


def test_cli_generates_the_release_layout(release, tmp_path, capsys):
    import json

    import datasets
    from PIL import Image

    from timm_introspect.cli import main

    folder, images, labels, sums = release
    ds = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(im) for im in images], "label": labels.tolist()},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}))
    ds.to_parquet(str(tmp_path / "cifar" / "test-00000-of-00001.parquet"))
    out = tmp_path / "c10c"
    main(["cifar10c", "--data", str(tmp_path / "cifar"), "--corruptions", "contrast", "fog", "--out", str(out)])
    report = json.loads((out / "generation.json").read_text())
    assert report["images"] == 8 and set(report["seconds"]) == {"contrast", "fog"}
    # the same files as write_official on the same images, seed 0
    assert report["md5"]["fog.npy"] == sums["fog.npy"] and report["md5"]["labels.npy"] == sums["labels.npy"]
    data, lab = load_cifar10c(out)
    assert set(data) == {"contrast", "fog"} and data["fog"].shape == (40, 32, 32, 3)
    assert "fog" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown corruption"):
        main(["cifar10c", "--data", str(tmp_path / "cifar"), "--corruptions", "fgo", "--out", str(out)])
    with pytest.raises(SystemExit, match="--frost-dir"):
        main(["cifar10c", "--data", str(tmp_path / "cifar"), "--corruptions", "frost", "--out", str(out)])


def test_loader_refuses_shadowed_odd_or_wrong_files(release, tmp_path):
    """Issue 15.9: no file shadows another, labels are 1-d integer classes 0-9, only regular files are read;
    write_official refuses labels it would wrap and counts that differ."""
    import os
    import shutil

    folder, images, labels, _ = release
    twice = tmp_path / "twice"
    shutil.copytree(folder, twice / "a")
    shutil.copytree(folder, twice / "b")
    with pytest.raises(DataError, match="contrast.npy twice"):
        load_official(twice, ("contrast",))
    tar_path = tmp_path / "twice.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname="x")
        tar.add(folder, arcname="y")
    with pytest.raises(DataError, match="twice"):
        load_official(tar_path, ("contrast",))

    good = np.load(folder / "labels.npy")
    for bad in (good.astype(np.float32), good.reshape(5, -1), good + 10):
        broken = tmp_path / f"labels-{bad.dtype}-{bad.ndim}-{bad.max()}"
        shutil.copytree(folder, broken)
        np.save(broken / "labels.npy", bad)
        with pytest.raises(DataError, match="labels.npy"):
            load_official(broken, ("contrast",))

    odd = tmp_path / "odd"
    shutil.copytree(folder, odd)
    (odd / "fog.npy").unlink()
    os.mkfifo(odd / "fog.npy")
    with pytest.raises(DataError, match="not a regular file"):  # instead of hanging on the FIFO
        load_official(odd, ("fog",))

    for bad_labels in (np.array([300] + [1] * 7), np.array([-1] + [1] * 7), labels[:7]):
        with pytest.raises(ValueError, match="labels"):
            write_official(tmp_path / "w", images, bad_labels, corruptions=("contrast",), progress=False)
