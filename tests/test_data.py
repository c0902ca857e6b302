"""Tests for spear.data: synthetic files in the original formats plus the real datasets."""
from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spear.data import (
    ALIASES,
    DATASETS,
    CIFAR10,
    MNIST,
    Adult,
    ImageNetSample,
    TinyImageNet,
    load_dataset,
    read_idx,
)
from spear.data.images import resize_shorter_center_crop


# --------------------------------------------------------------------------- helpers
def write_idx(path: Path, arr: np.ndarray, magic: int, *, gz: bool) -> Path:
    """Write ``arr`` (uint8) in IDX format, independently of the loader."""
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    payload += arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 2051, gz=gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz=gz)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Original CIFAR-10 python format: rows of R plane, G plane, B plane (1024 bytes each)."""
    rows = np.stack([np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()]) for img in images])
    d = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in labels],
        b"data": rows.astype(np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def adult_rows(path: Path) -> tuple[list[list[str]], int]:
    """Parse an ADULT file the plain way: (complete rows, number of rows with '?')."""
    rows, missing = [], 0
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("|"):
            continue
        fields = [v.strip() for v in line.split(",")]
        if "?" in fields:
            missing += 1
        else:
            rows.append(fields)
    return rows, missing


ADULT_CONT = {"age": 0, "fnlwgt": 2, "education-num": 4, "capital-gain": 10, "capital-loss": 11,
              "hours-per-week": 12}
ADULT_CAT = {"workclass": 1, "education": 3, "marital-status": 5, "occupation": 6,
             "relationship": 7, "race": 8, "sex": 9, "native-country": 13}


def _mode(path: Path) -> str:
    with Image.open(path) as img:  # reads the header only
        return img.mode


@pytest.fixture()
def no_image_decoding(monkeypatch):
    """Make any PIL.Image.open call fail, to prove construction decodes nothing."""

    def boom(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(Image, "open", boom)


# ----------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip_synthetic(tmp_path, gz):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, 2051, gz=gz)
    np.testing.assert_array_equal(read_idx(path, 2051), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_synthetic_exact(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    write_mnist(tmp_path, "t10k", images, labels, gz)

    raw = MNIST(tmp_path, normalize=False)
    x, y = raw.get(np.arange(7))
    assert x.dtype == np.float32 and x.shape == (7, 784)
    np.testing.assert_array_equal(x.reshape(7, 28, 28), images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)

    norm = MNIST(tmp_path)
    xn, _ = norm.get(np.arange(7))
    np.testing.assert_allclose(xn, (x - 0.1307) / 0.3081, rtol=0, atol=1e-6)
    np.testing.assert_allclose(norm.to_pixels(xn)[:, 0], images / 255, rtol=0, atol=1e-6)


def test_idx_bad_magic_and_truncation(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, 2049, gz=False)
    with pytest.raises(ValueError, match="magic"):
        read_idx(path, 2051)
    images = np.zeros((2, 28, 28), np.uint8)
    write_mnist(tmp_path, "t10k", images, labels[:2], gz=False)
    # Swap the images file for a label file: the loader must notice.
    write_idx(tmp_path / "t10k-images-idx3-ubyte", labels, 2049, gz=False)
    with pytest.raises(ValueError, match="magic"):
        MNIST(tmp_path)
    good = write_idx(tmp_path / "trunc", images, 2051, gz=False)
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(ValueError):
        read_idx(good, 2051)


def test_mnist_split_fallback_and_missing(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    write_mnist(tmp_path, "train", images, np.array([0, 1], np.uint8), gz=True)
    with pytest.warns(UserWarning, match="train"):
        ds = MNIST(tmp_path)
    assert ds.split == "train" and len(ds) == 2
    with pytest.raises(FileNotFoundError, match=re.escape(f"t10k-images-idx3-ubyte[.gz] in {tmp_path}")):
        MNIST(tmp_path, split="test")


def test_mnist_real(datasets_root):
    folder = datasets_root / "mnist"
    ds = load_dataset("mnist", folder, normalize=False)
    assert len(ds) == 10_000 and ds.sample_shape == (1, 28, 28)
    raw_labels = np.frombuffer(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    np.testing.assert_array_equal(ds.labels, raw_labels)
    assert set(ds.labels.tolist()) == set(range(10))
    raw_images = np.frombuffer(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    raw_images = raw_images.reshape(10_000, 28, 28)
    idx = np.array([0, 1, 4242, 9999])
    x, y = ds.get(idx)
    np.testing.assert_array_equal(ds.to_pixels(x)[:, 0], raw_images[idx].astype(np.float32) / 255)
    np.testing.assert_array_equal(y, raw_labels[idx])

    norm = load_dataset("mnist", folder)
    assert norm.normalized and np.allclose(norm.mean, [0.1307]) and np.allclose(norm.std, [0.3081])
    xn, _ = norm.get(idx)
    np.testing.assert_allclose(norm.to_pixels(xn)[:, 0], raw_images[idx] / 255, rtol=0, atol=1e-6)


# -------------------------------------------------------------------------- CIFAR-10
def test_cifar10_pickle_exact(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
    # A pure-red image pins the plane order: R first.
    images[0] = 0
    images[0, 0] = 255
    labels = np.array([0, 9, 2, 3, 4, 5])
    nested = tmp_path / "cifar-10-batches-py"
    nested.mkdir()
    write_cifar_batch(nested / "test_batch", images, labels)

    ds = CIFAR10(tmp_path, normalize=False)  # parent folder: must find the nested one
    x, y = ds.get(np.arange(6))
    pix = ds.to_pixels(x)
    np.testing.assert_array_equal(pix, images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    assert pix[0, 0].min() == 1.0 and pix[0, 1:].max() == 0.0

    norm = load_dataset("cifar10", nested)
    xn, _ = norm.get(np.arange(6))
    np.testing.assert_allclose(norm.to_pixels(xn), images / 255, rtol=0, atol=1e-6)
    # Normalised red channel of the red image is (1 - 0.4914) / 0.2470.
    np.testing.assert_allclose(xn[0, :1024], (1 - 0.4914) / 0.2470, rtol=1e-6)


def test_cifar10_train_split_concatenates_in_order(tmp_path):
    for b in range(1, 6):
        imgs = np.full((2, 3, 32, 32), 10 * b, np.uint8)
        write_cifar_batch(tmp_path / f"data_batch_{b}", imgs, np.array([b, b]))
    ds = CIFAR10(tmp_path, split="train", normalize=False)
    assert len(ds) == 10
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(1, 6), 2))
    x, _ = ds.get([0, 9])
    np.testing.assert_array_equal(x[:, 0] * 255, np.array([10, 50], np.float32))
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        CIFAR10(tmp_path, split="train")


# ------------------------------------------------------------------ Tiny ImageNet
def test_tiny_imagenet_real(datasets_root, no_image_decoding, monkeypatch):
    root = datasets_root / "tiny-imagenet-200"
    ds = load_dataset("tinyimagenet", root)  # Image.open is booby-trapped: construction is lazy
    assert isinstance(ds, TinyImageNet) and ds.sample_shape == (3, 64, 64)
    with pytest.raises(AssertionError, match="opened"):
        ds.get([0])  # the trap is live: decoding happens in get

    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    ann = [line.split("\t") for line in (root / "val" / "val_annotations.txt").read_text().splitlines() if line.strip()]
    assert len(ds) == len(ann) and ds.num_classes == len(wnids)
    np.testing.assert_array_equal(ds.labels, [wnids.index(a[1].strip()) for a in ann])
    assert [p.name for p in ds.paths] == [a[0] for a in ann]

    monkeypatch.undo()  # allow decoding again
    # Header-only opens are cheap: find a grayscale image among the first ones.
    gray = next(i for i, p in enumerate(ds.paths[:500]) if _mode(p) == "L")
    idx = [0, 1, gray]
    raw = load_dataset("tiny_imagenet", root, normalize=False)
    x, y = raw.get(idx)
    assert x.shape == (3, 3 * 64 * 64) and x.dtype == np.float32
    for k, i in enumerate(idx):
        expected = np.asarray(Image.open(ds.paths[i]).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
        np.testing.assert_array_equal(raw.to_pixels(x)[k], expected)
    g = raw.to_pixels(x)[2]
    assert np.array_equal(g[0], g[1]) and np.array_equal(g[1], g[2])  # grey -> equal RGB planes

    xn, yn = ds.get(idx)
    np.testing.assert_array_equal(yn, y)
    np.testing.assert_allclose(ds.to_pixels(xn), raw.to_pixels(x), rtol=0, atol=1e-6)
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(xn.reshape(3, 3, 64, 64), (raw.to_pixels(x) - mean) / std, atol=1e-5)

    small = load_dataset("tiny-imagenet", root, image_size=32)
    assert small.get([0])[0].shape == (1, 3 * 32 * 32)


# ----------------------------------------------------------------------- ImageNet
def test_imagenet_sample_real(datasets_root, no_image_decoding, monkeypatch):
    root = datasets_root / "imagenet-sample"
    ds = load_dataset("imagenet", root)  # lazy: Image.open raises if called
    with pytest.raises(AssertionError, match="opened"):
        ds.get([0])
    names = sorted(f for f in os.listdir(root) if f.endswith(".JPEG"))
    wnids = sorted({f.split("_")[0] for f in names})
    assert len(ds) == len(names) and ds.num_classes == len(wnids)
    assert ds.sample_shape == (3, 224, 224)
    for p, label in zip(ds.paths, ds.labels):
        assert wnids[label] == p.name.split("_")[0]
    monkeypatch.undo()

    idx = [0, 500]
    x, y = ds.get(idx)
    assert x.shape == (2, 3 * 224 * 224) and x.dtype == np.float32
    np.testing.assert_array_equal(y, ds.labels[idx])
    raw = load_dataset("imagenet", root, normalize=False)
    xr, _ = raw.get(idx)
    np.testing.assert_allclose(ds.to_pixels(x), raw.to_pixels(xr), rtol=0, atol=1e-6)

    big = load_dataset("imagenet", root, image_size=720, normalize=False)
    xb, _ = big.get([3])
    assert xb.shape == (1, 3 * 720 * 720) and big.to_pixels(xb).shape == (1, 3, 720, 720)
    # Bilinear weights are non-negative, so upscaled pixels stay inside [0, 1].
    assert xb.min() >= 0.0 and xb.max() <= 1.0 and xb.std() > 0.01


def test_resize_shorter_center_crop_geometry():
    arr = np.arange(50 * 100 * 3, dtype=np.uint32).reshape(50, 100, 3) % 251
    img = Image.fromarray(arr.astype(np.uint8))
    # Shorter side already 50: no resampling, just the centred 50x50 window.
    np.testing.assert_array_equal(np.asarray(resize_shorter_center_crop(img, 50)), arr[:, 25:75])
    tall = Image.fromarray(arr.transpose(1, 0, 2).astype(np.uint8))  # 50 wide, 100 high
    assert resize_shorter_center_crop(tall, 30).size == (30, 30)
    assert resize_shorter_center_crop(tall, 720).size == (720, 720)


# -------------------------------------------------------------------------- ADULT
@pytest.fixture(scope="module")
def adult_text(datasets_root):
    folder = datasets_root / "adult"
    train, train_missing = adult_rows(folder / "adult.data")
    test, test_missing = adult_rows(folder / "adult.test")
    return folder, train, train_missing, test, test_missing


def test_adult_counts_and_onehot(adult_text):
    folder, train, train_missing, test, test_missing = adult_text
    assert train_missing > 0 and test_missing > 0  # the drop is really exercised
    ds_test = load_dataset("adult", folder)
    ds_train = Adult(folder, split="train")
    assert ds_test.split == "test" and ds_test.kind == "tabular"
    assert len(ds_train) == len(train) and len(ds_test) == len(test)
    assert len(train) + train_missing == 32_561  # the documented raw row count
    np.testing.assert_array_equal(ds_test.labels, [r[14].rstrip(".") == ">50K" for r in test])

    x, _ = ds_test.get(np.arange(len(ds_test)))
    assert x.shape == (len(test), ds_test.sample_shape[0]) and x.dtype == np.float32
    n_cat = 0
    for col in ds_test.schema.categorical:
        np.testing.assert_array_equal(x[:, col.slice].sum(axis=1), 1.0)
        assert set(np.unique(x[:, col.slice])) == {0.0, 1.0}
        assert list(col.categories) == sorted({r[ADULT_CAT[col.name]] for r in train})
        n_cat += len(col.categories)
    assert ds_test.sample_shape == (len(ADULT_CONT) + n_cat,)
    with pytest.raises(TypeError):
        ds_test.to_pixels(x[:2])


def test_adult_standardised_with_train_stats(adult_text):
    folder, train, _, test, _ = adult_text
    ds = load_dataset("adult", folder)
    x, _ = ds.get(np.arange(len(ds)))
    for col in ds.schema.continuous:
        j = ADULT_CONT[col.name]
        tr = np.array([float(r[j]) for r in train])
        te = np.array([float(r[j]) for r in test])
        assert col.mean == pytest.approx(tr.mean()) and col.std == pytest.approx(tr.std())
        assert col.mean != pytest.approx(te.mean(), rel=1e-9)  # not the test split's stats
        np.testing.assert_allclose(x[:, col.index], (te - tr.mean()) / tr.std(), rtol=1e-6, atol=1e-6)


def test_adult_decode_roundtrip_real_rows(adult_text):
    folder, _, _, test, _ = adult_text
    ds = load_dataset("adult", folder)
    x, _ = ds.get(np.arange(len(ds)))
    exact = ds.decode(x, round_continuous=True)
    loose = ds.decode(x)
    order = sorted({**ADULT_CONT, **ADULT_CAT}.items(), key=lambda kv: kv[1])
    assert list(exact) == [name for name, _ in order]  # original column order
    for name, j in ADULT_CONT.items():
        truth = np.array([float(r[j]) for r in test])
        np.testing.assert_array_equal(exact[name], truth)
        assert loose[name].dtype == np.float64
        std = next(c.std for c in ds.schema.continuous if c.name == name)
        # float32 keeps |z| < 16 to within 2**-20, i.e. about 1e-6 standard deviations.
        np.testing.assert_allclose(loose[name], truth, rtol=0, atol=2e-6 * std)
    for name, j in ADULT_CAT.items():
        np.testing.assert_array_equal(exact[name], [r[j] for r in test])
    assert not np.array_equal(loose["fnlwgt"], exact["fnlwgt"])  # default does not round
    # encode is the exact inverse on decoded rows.
    np.testing.assert_array_equal(ds.encode(exact), x)

    raw = load_dataset("adult", folder, normalize=False)  # unstandardised: exact without rounding
    np.testing.assert_array_equal(raw.decode(raw.get([0, 5])[0])["fnlwgt"], [float(test[i][2]) for i in (0, 5)])


# ------------------------------------------------------------------------- digits
def test_digits_basics_and_normalisation():
    ds = load_dataset("digits")
    assert ds.sample_shape == (1, 8, 8) and ds.num_classes == 10 and len(ds) == 1797
    x, y = ds.get(np.arange(len(ds)))
    pix = ds.to_pixels(x)
    assert pix.shape == (1797, 1, 8, 8)
    assert pix.min() > -1e-6 and pix.max() < 1 + 1e-6
    np.testing.assert_allclose(pix * 16, np.rint(pix * 16), atol=1e-5)  # multiples of 1/16
    # Mean/std come from the data itself, so normalised inputs are standardised.
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-4
    raw = load_dataset("digits", normalize=False)
    assert raw.mean is None and raw.std is None
    np.testing.assert_array_equal(raw.get([7])[0].reshape(8, 8) * 16, _sklearn_digit(7))


def _sklearn_digit(i: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[i]


def test_sample_batch_determinism_and_homogeneity():
    ds = load_dataset("digits")
    x1, y1, i1 = ds.sample_batch(32, seed=5)
    x2, y2, i2 = ds.sample_batch(32, seed=5)
    _, _, i3 = ds.sample_batch(32, seed=6)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(x1, x2)
    assert len(set(i1.tolist())) == 32 and not np.array_equal(i1, i3)
    np.testing.assert_array_equal(y1, ds.labels[i1])
    np.testing.assert_array_equal(x1, ds.get(i1)[0])

    _, yh, ih = ds.sample_batch(50, seed=1, label_homogeneous=True)
    assert len(set(yh.tolist())) == 1 and len(set(ih.tolist())) == 50
    _, y3, _ = ds.sample_batch(20, seed=1, label_homogeneous=True, label=3)
    assert set(y3.tolist()) == {3}
    # The seed picks the class: several seeds should not all give the same one.
    picked = {int(ds.sample_batch(4, seed=s, label_homogeneous=True)[1][0]) for s in range(20)}
    assert len(picked) > 1


def test_sample_batch_impossible_requests():
    ds = load_dataset("digits")
    largest = np.bincount(ds.labels).max()
    with pytest.raises(ValueError, match="exceeds"):
        ds.sample_batch(len(ds) + 1)
    with pytest.raises(ValueError):
        ds.sample_batch(largest + 1, label_homogeneous=True)
    with pytest.raises(ValueError):
        ds.sample_batch(int(np.bincount(ds.labels)[4]) + 1, label_homogeneous=True, label=4)
    with pytest.raises(ValueError):
        ds.sample_batch(0)
    x, y, _ = ds.sample_batch(len(ds), seed=0)  # the whole dataset is still possible
    assert sorted(y.tolist()) == sorted(ds.labels.tolist())


def test_get_indexing():
    ds = load_dataset("digits", normalize=False)
    x_last, _ = ds.get(-1)
    np.testing.assert_array_equal(x_last, ds.get([len(ds) - 1])[0])
    assert ds.get(0)[0].shape == (1, 64)
    with pytest.raises(IndexError):
        ds.get([len(ds)])


# ----------------------------------------------------------------------- registry
def test_registry_errors(tmp_path):
    assert set(DATASETS) == {"mnist", "cifar10", "tiny-imagenet", "imagenet", "adult", "digits"}
    assert ALIASES["tinyimagenet"] == ALIASES["tiny_imagenet"] == "tiny-imagenet"
    with pytest.raises(ValueError, match="known: .*mnist.*digits"):
        load_dataset("svhn")
    with pytest.raises(ValueError):
        load_dataset("mnist")  # root required
    missing = tmp_path / "nowhere"
    for name in ("mnist", "cifar10", "tiny-imagenet", "imagenet", "adult"):
        with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
            load_dataset(name, missing)
    # Existing but empty folder: the message names the expected file and the folder.
    with pytest.raises(FileNotFoundError, match=re.escape(f"adult.data in {tmp_path}")):
        load_dataset("adult", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"wnids.txt in {tmp_path}")):
        load_dataset("tiny-imagenet", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"test_batch in {tmp_path}")):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_dataset("imagenet", tmp_path)
    assert isinstance(DATASETS["imagenet"], type) and issubclass(DATASETS["imagenet"], ImageNetSample)
