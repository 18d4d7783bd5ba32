"""How arrays cross between host and agent: a plain .npz (never a pickle), base64 in JSON."""

from __future__ import annotations

import base64
import io

import numpy as np


def encode_arrays(arrays: list[np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return base64.b64encode(buffer.getvalue()).decode()


def decode_arrays(text: str) -> list[np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
