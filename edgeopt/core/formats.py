"""What a model file is, by its content — never by its name — and whether it is safe to load.

``sniff`` reads a file's first bytes (and, for a zip archive, its member names: nothing is
extracted) and names its format. Data formats load by default: safetensors, ONNX, OpenVINO
IR, ExecuTorch ``.pte`` and edgeopt artifact folders. A pickled checkpoint (a plain pickle
or ``torch.save``'s zip of pickles) loads only through ``torch.load(weights_only=True)``,
with no fallback. TorchScript and ``.pt2`` archives are programs: refused unless the caller
says ``trust_model`` or the process trusts programs (``edgeopt.core.trust``). A file whose name promises one format while its bytes are another is
refused. (An ONNX model's external data is checked by ``edgeopt.core.onnx_external``.)

Example:
    >>> sniff_bytes(b"\\x80\\x04\\x95")
    'pickle'
    >>> sniff_bytes(b"<?xml version='1.0'?><net name='m'>")
    'openvino-ir'
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.core.errors import ModelSourceError
from edgeopt.core.trust import require_programs

if TYPE_CHECKING:
    import numpy as np

HEAD = 64
MAX_MODEL_BYTES = int(os.environ.get("EDGEOPT_MAX_MODEL_MB", "4096")) << 20  # checked before any parser runs
DATA_FORMATS = ("safetensors", "onnx", "openvino-ir", "executorch", "artifact")
PICKLED = ("pickle", "torch-zip")  # weights_only=True, or nothing
EXECUTABLE = ("torchscript", "pt2")  # programs: only with trust_model
DESCRIPTION = {
    "safetensors": "a safetensors file", "onnx": "an ONNX model", "openvino-ir": "an OpenVINO IR model",
    "executorch": "an ExecuTorch program", "artifact": "an edgeopt artifact", "pickle": "a Python pickle",
    "torch-zip": "a torch.save checkpoint (a zip of pickles)", "torchscript": "a TorchScript archive",
    "pt2": "a torch.export .pt2 archive", "zip": "a zip archive", "tflite": "a TFLite flatbuffer",
    "unknown": "of no format edgeopt knows",
}
# What a file name promises (a mismatch with the content is refused)
SUFFIXES = {".safetensors": ("safetensors",), ".onnx": ("onnx",), ".xml": ("openvino-ir",), ".pte": ("executorch",),
            ".pt": ("torch-zip", "pickle", "torchscript"), ".pth": ("torch-zip", "pickle"), ".pt2": ("pt2",)}


def sniff_bytes(head: bytes, size: int | None = None) -> str:
    """The format the first bytes of a file show (``size``: the file's size, to check a claimed header)."""
    if len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5):
        return "pickle"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit():
        return "executorch"
    if len(head) >= 8 and head[4:8] == b"TFL3":  # a TFLite flatbuffer's file identifier
        return "tflite"
    stripped = head.lstrip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<net"):
        return "openvino-ir"
    if len(head) >= 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if size is not None and length > size - 8:
            claimed = f"{length / 2**30:.1f} GB" if length >= 2**30 else f"{length:,} bytes"
            raise ModelSourceError(f"a safetensors header claiming {claimed} in a file of {size:,} bytes: the file is "
                                   "truncated or corrupt (or made to mislead); save it again")
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x08 and head[1] < 0x80:  # ONNX ModelProto: field 1 (ir_version), a varint
        return "onnx"
    return "unknown"


def _zip_kind(path: Path) -> str:
    """TorchScript, .pt2 or torch.save, from the archive's member names (nothing is extracted)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelSourceError(f"{path} is a zip archive that cannot be read ({exc}): truncated or corrupt") from None
    # members sit under one top folder; what follows it tells the formats apart (a TorchScript archive's
    # code/ holds the model's own module path, which may well contain "models/")
    inner = [n.partition("/")[2] for n in names]
    if any(n.endswith("serialized_exported_program.json") or n.startswith("models/") or n == "archive_format"
           for n in inner):
        return "pt2"
    if any(n == "constants.pkl" or n.startswith("code/") for n in inner):
        return "torchscript"
    if any(n == "data.pkl" for n in inner):
        return "torch-zip"
    return "zip"


def sniff(path: str | os.PathLike, max_bytes: int = MAX_MODEL_BYTES) -> str:
    """The format of the file or artifact folder at ``path``; ModelSourceError when it is missing or too large."""
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "artifact"
        raise ModelSourceError(f"{path} is a folder but not an edgeopt artifact (no manifest.json)")
    if not path.is_file():
        raise ModelSourceError(f"{path} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelSourceError(f"{path} is {size / 2**20:.0f} MB, over the {max_bytes >> 20} MB limit "
                               "(EDGEOPT_MAX_MODEL_MB raises it)")
    if size == 0:
        raise ModelSourceError(f"{path} is empty")
    with open(path, "rb") as handle:
        kind = sniff_bytes(handle.read(HEAD), size)
    return _zip_kind(path) if kind == "zip" else kind


def check_loadable(path: str | os.PathLike, trust_model: bool = False) -> str:
    """The format of ``path`` when edgeopt may load it, else ModelSourceError saying why not and what to do."""
    path = Path(path)
    kind = sniff(path)
    promised = SUFFIXES.get(path.suffix.lower())
    if promised and kind not in promised:
        raise ModelSourceError(f"{path} is named like {DESCRIPTION[promised[0]]} but is {DESCRIPTION[kind]}; "
                               "edgeopt goes by the content: rename it, or check where it came from")
    if kind in EXECUTABLE and not trust_model:
        require_programs(f"{path} is {DESCRIPTION[kind]}")
    if kind in ("zip", "unknown"):
        raise ModelSourceError(f"{path} is {DESCRIPTION[kind]}; edgeopt loads safetensors, ONNX, OpenVINO IR, "
                               "ExecuTorch, artifacts and (weights only) PyTorch checkpoints")
    return kind


def npy_header(data: bytes) -> tuple[tuple[int, ...], "np.dtype", int]:
    """The shape and dtype a .npy file's header declares, and how many bytes follow the header: read
    without reading the array (numpy allocates whatever a header claims before it reads the data).
    ValueError when there is no readable 1.0 or 2.0 header."""
    import io

    from numpy.lib import format as npy

    handle = io.BytesIO(data)
    try:
        version = npy.read_magic(handle)
        read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"format version {version[0]}.{version[1]} is not 1.0 or 2.0")
        shape, _, dtype = read(handle)
    except (OSError, EOFError, SyntaxError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return tuple(shape), dtype, len(data) - handle.tell()
