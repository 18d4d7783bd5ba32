import numpy as np
import pytest

from edgeopt.core.errors import ConfigError, InputError
from edgeopt.core.spec import InputSpec, Preprocess


def test_parse_accepts_x_and_commas():
    assert InputSpec.parse("1x3x224x224").shape == (1, 3, 224, 224)
    assert InputSpec.parse("2,10").shape == (2, 10)


@pytest.mark.parametrize("text", ["", "1xfoo", "0x3x8x8", "-1x3"])
def test_parse_rejects_bad_shapes(text):
    with pytest.raises(ConfigError):
        InputSpec.parse(text)


def test_round_trip_through_dict_keeps_preprocess():
    spec = InputSpec((1, 1, 64, 64), preprocess=Preprocess(crop=(64, 64), mean=(0.5,), std=(0.25,), channels="GRAY"))
    assert InputSpec.from_dict(spec.to_dict()) == spec


def test_example_is_deterministic_and_batched():
    spec = InputSpec((1, 3, 8, 8))
    a, b = spec.example(batch=4, seed=3), spec.example(batch=4, seed=3)
    assert a.shape == (4, 3, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_validate_names_the_problem():
    spec = InputSpec((1, 3, 8, 8), max_batch=4)
    with pytest.raises(InputError, match="takes 1 input"):
        spec.validate([np.zeros((1, 3, 8, 8), np.float32)] * 2)
    with pytest.raises(InputError, match="has shape 3x8x8"):
        spec.validate(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InputError, match="dtype"):
        spec.validate(np.zeros((1, 3, 8, 8), np.complex64))
    with pytest.raises(InputError, match="at most 4"):
        spec.validate(np.zeros((5, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="NaN"):
        spec.validate(np.full((1, 3, 8, 8), np.inf, np.float32))


def test_validate_fixed_batch_and_casts_safely():
    spec = InputSpec((2, 4), dynamic_batch=False)
    with pytest.raises(InputError, match="batch 2 only"):
        spec.validate(np.zeros((3, 4), np.float32))
    out = spec.validate(np.zeros((2, 4), np.float64))
    assert out.dtype == np.float32


def test_preprocess_validates():
    with pytest.raises(ConfigError):
        Preprocess(channels="CMYK")
    with pytest.raises(ConfigError):
        Preprocess(mean=(0.5,), std=(0.5, 0.5))
