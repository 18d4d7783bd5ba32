import numpy as np
import pytest

from edgeopt.tasks.classification.data import ImageDataset, input_spec_for, load_dataset
from edgeopt.images import to_input
from edgeopt.core.errors import ConfigError
from edgeopt.core.spec import InputSpec, Preprocess


def _toy(n_per_class=10, classes=3, size=8, channels=1):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n_per_class * classes, size, size, channels), dtype=np.uint8)
    return ImageDataset(images, np.repeat(np.arange(classes), n_per_class), tuple("abc"[:classes]))


def test_digits_is_real_grayscale_data_with_a_seeded_split():
    splits = load_dataset("digits")
    assert splits.train.images.shape[1:] == (8, 8, 1) and len(splits.classes) == 10
    assert len(splits.train) + len(splits.test) == 1797
    again = load_dataset("digits")
    np.testing.assert_array_equal(splits.test.labels, again.test.labels)


def test_split_and_calibration_are_stratified_and_seeded():
    data = _toy()
    rest, part = data.split(0.2, seed=1)
    assert np.bincount(part.labels).tolist() == [2, 2, 2] and len(rest) == 24
    calib = data.calibration(6, seed=0)
    assert sorted(np.bincount(calib.labels).tolist()) == [2, 2, 2]
    np.testing.assert_array_equal(calib.images, data.calibration(6, seed=0).images)
    assert len(data.calibration(1000)) == len(data)


def test_to_input_normalises_and_resizes():
    data = _toy(channels=3)
    spec = InputSpec((1, 3, 8, 8), preprocess=Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3))
    x = to_input(data.images[:2], spec)
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x, (data.images[:2].transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5, atol=1e-6)
    assert to_input(data.images[:2], InputSpec((1, 3, 4, 4), preprocess=spec.preprocess)).shape == (2, 3, 4, 4)
    with pytest.raises(ConfigError, match="do not fit"):
        to_input(data.images[:2], InputSpec((1, 1, 8, 8)))


def test_input_spec_uses_training_statistics():
    spec = input_spec_for(_toy())
    assert spec.shape == (1, 1, 8, 8) and spec.preprocess.channels == "GRAY"
    assert 0.3 < spec.preprocess.mean[0] < 0.7


def test_npz_and_image_folder(tmp_path):
    from PIL import Image

    data = _toy(channels=1)
    np.savez(tmp_path / "d.npz", x_train=data.images[..., 0], y_train=data.labels,
             x_test=data.images[:5, ..., 0], y_test=data.labels[:5], classes=np.array(["a", "b", "c"]))
    splits = load_dataset(str(tmp_path / "d.npz"), extra_train=[str(tmp_path / "d.npz")])
    assert len(splits.train) == 60 and splits.classes == ("a", "b", "c") and splits.train.channels == 1
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / "tree" / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(tmp_path / "tree" / split / name / f"{i}.png")
    tree = load_dataset(str(tmp_path / "tree"), image_size=16)
    assert tree.train.images.shape == (6, 16, 16, 3) and tree.classes == ("cat", "dog")
    (tmp_path / "tree" / "train" / "cat" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="bad.jpg is not a JPEG, PNG, BMP or WebP image"):
        load_dataset(str(tmp_path / "tree"), image_size=16)
    with pytest.raises(ConfigError, match="not found"):
        load_dataset("nowhere")


def test_grayscale_image_folder_stays_one_channel_and_mixed_becomes_rgb(tmp_path):
    from PIL import Image

    for name in ("crazing", "scratches"):
        (tmp_path / "gray" / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((20, 20), i * 40, np.uint8)).save(tmp_path / "gray" / name / f"{i}.png")
    gray = load_dataset(str(tmp_path / "gray"), image_size=8)
    assert gray.train.channels == 1 and gray.train.images.shape[1:] == (8, 8, 1)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "gray" / "crazing" / "colour.png")
    mixed = load_dataset(str(tmp_path / "gray"), image_size=8)
    assert mixed.train.channels == 3
