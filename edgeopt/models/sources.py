"""Model sources: resolve a source string into a model and its InputSpec.

Accepted sources:

- ``torchvision:<name>[?weights=DEFAULT&num_classes=10]`` — a torchvision model builder;
  ``weights=DEFAULT`` downloads pretrained weights (needs internet) and takes the
  preprocessing and labels from the weights' metadata.
- ``timm:<name>[?pretrained=true&num_classes=10]`` — a timm model (``pip install timm``).
- ``package.module:factory[?key=value]`` — a callable returning an ``nn.Module``.
- ``path.safetensors`` or a state-dict ``path.pt``/``.pth`` (loaded with
  ``weights_only=True``; pickled modules are refused) applied to ``arch``, an
  architecture source as above. Checkpoints written by edgeopt carry their arch.
- ``path.onnx`` — an ONNX model, for the ONNX-based backends (its external data must lie
  beside it: checked before ONNX reads any of it).
- ``path.pt`` TorchScript or ``path.pt2`` (torch.export) archives — programs, so only with
  ``trust_model=True`` (``--trust-model``); they come in as they are, with a given input shape.

A file is recognised by its content, never its name (``edgeopt.core.formats``): a ``.onnx`` that is
a pickle is refused. Loading is safe by construction: no pickle is ever executed, and an
architecture a file names (a checkpoint's ``edgeopt.arch``, a manifest's, a recipe's) is imported
only through ``edgeopt.core.trust``: torchvision and timm names, edgeopt's own, installed plugins, or
what the caller named (``origin=None``) — never a ``module:callable`` because a file says so.

Example:
    >>> model = load_model("torchvision:mobilenet_v2")          # doctest: +SKIP
    >>> model.input_spec.shape                                   # doctest: +SKIP
    (1, 3, 224, 224)
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import parse_qsl

import numpy as np

from edgeopt.core.errors import ConfigError, ModelSourceError, first_line
from edgeopt.core.size import of_shape, parse_size
from edgeopt.core.spec import InputSpec, Preprocess
from edgeopt.core.trust import check_import, current_name, import_object, trusting

if TYPE_CHECKING:
    import torch

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
META_ARCH, META_INPUT, META_LABELS, META_TASK = "edgeopt.arch", "edgeopt.input", "edgeopt.labels", "edgeopt.task"
META_WIDTHS = "edgeopt.widths"  # layer widths of a pruned architecture (see layer_shapes)
CHECKPOINT_META = (META_ARCH, META_INPUT, META_LABELS, META_TASK, META_WIDTHS)  # a checkpoint's header
SOURCE_HELP = (
    "use torchvision:<name>, timm:<name>, package.module:factory, a .safetensors/.pt checkpoint "
    "with --arch, or an .onnx file"
)
ARCH_HELP = "an architecture is torchvision:<name>, timm:<name> or package.module:factory"
DOWNLOADS = ("weights", "weights_backbone", "pretrained")  # arguments that fetch weights: never from a file
TIMM_ARGUMENTS = frozenset({"num_classes", "in_channels", "in_chans", "drop_rate", "drop_path_rate", "global_pool",
                            "img_size"})  # shape the architecture, read nothing: all a file may pass to timm
WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch.load's process-wide override
TIMM_LOADERS = frozenset({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"})  # read files


@dataclass
class LoadedModel:
    """A resolved model: a torch module or an ONNX file, with its InputSpec.

    ``arch`` is the source that rebuilds the architecture without weights (``None`` for
    ONNX); ``kind`` is ``"torch"`` or ``"onnx"``.
    """

    source: str
    input_spec: InputSpec
    module: "torch.nn.Module | None" = None
    onnx_path: Path | None = None
    arch: str | None = None
    task: str = "unknown"
    labels: list[str] | None = None
    quantized: bool = False  # the module carries trained fake-quantization (QAT): INT8 backends convert it
    head: dict[str, Any] | None = None  # a detector's output convention (edgeopt.tasks.detection.boxes.DetectionHead record)

    @property
    def kind(self) -> str:
        return "torch" if self.module is not None else "onnx"

    def reference(self) -> Callable[[np.ndarray], list[np.ndarray]]:
        """A function running the unconverted FP32 model: numpy batch in, numpy outputs out."""
        if self.module is not None:
            return torch_runner(self.module)
        return onnx_runner(self.onnx_path)


def load_model(source: str, input: str | InputSpec | None = None, arch: str | None = None,
               trust_model: bool = False, origin: str | None = None) -> LoadedModel:
    """Resolve ``source`` into a LoadedModel; ``input`` overrides the inferred InputSpec; ``trust_model``
    lets a TorchScript or .pt2 archive (a program) load, and names in the files resolve.

    ``origin`` says where ``source`` and ``arch`` were read from (a manifest, a recipe): their import
    paths then resolve only if known or granted (``edgeopt.core.trust``). None: the caller named them.
    """
    if trust_model:
        with trusting(programs=True):
            return load_model(source, input, arch, origin=origin)
    source = source.strip()
    given = input if isinstance(input, InputSpec) or input is None else InputSpec.parse(input)
    if source.startswith(("torchvision:", "timm:")) or (":" in source and not _is_file_source(source)):
        model = _from_architecture(source, given, origin)
    elif _is_file_source(source):
        model = _from_file(Path(source), arch, given, origin)
    else:
        raise ModelSourceError(f"model source {source!r} is not understood; {SOURCE_HELP}")
    if given is not None:  # a program exported at a fixed batch (.pt2) keeps it whatever the shape given
        model.input_spec = replace(given, preprocess=given.preprocess or model.input_spec.preprocess,
                                   dynamic_batch=given.dynamic_batch and model.input_spec.dynamic_batch)
    if model.module is not None:
        try:
            model.module.eval()
        except NotImplementedError:  # a torch.export program is already fixed in inference mode
            pass
        from edgeopt.models.detectors import head_record

        model.head = head_record(model.module) or model.head
        if model.head and tuple(model.input_spec.shape[2:]) != tuple(model.head["image_size"]):
            _fit_detector_size(model, authoritative=given is not None or source.lower().endswith(CHECKPOINT_SUFFIXES))
        model.task = "detection" if model.head and model.task == "unknown" else model.task
    return model


def check_source(source: object, origin: str) -> None:
    """Refuse, before anything loads, a model source read from ``origin`` whose import path
    ``edgeopt.core.trust`` does not allow (torchvision, timm and file sources pass: a file is checked when it loads)."""
    if not isinstance(source, str) or not source.strip():
        return
    source = source.strip()
    if source.startswith(("torchvision:", "timm:")) or ":" not in source or _is_file_source(source):
        return
    check_import(source, origin, "--arch")


def _is_file_source(source: str) -> bool:
    return Path(source).exists() or source.lower().endswith((".onnx", ".pt2", *CHECKPOINT_SUFFIXES))


def _from_architecture(source: str, given: InputSpec | None, origin: str | None) -> LoadedModel:
    """An architecture source (no weights): torchvision, timm, or an import path that edgeopt.core.trust lets through."""
    if source.startswith("torchvision:"):
        return _from_torchvision(source, origin)
    if source.startswith("timm:"):
        return _from_timm(source, origin)
    if ":" not in source or _is_file_source(source):
        raise ModelSourceError(f"{origin or 'the architecture'} names {source!r}; {ARCH_HELP}")
    return _from_factory(source, given, origin)


def _fit_detector_size(model: LoadedModel, authoritative: bool) -> None:
    """Make a detector's input and anchors agree: a given (or checkpointed) input size rebuilds the
    anchors for it (torchvision's SSDlite trained at 128 px, say); an inferred one takes the detector's."""
    from edgeopt.models.detectors import head_record

    size = tuple(model.head["image_size"])
    if not authoritative:
        model.input_spec = replace(model.input_spec, shape=(*model.input_spec.shape[:2], *size))
        return
    resize = getattr(model.module, "at_size", None)
    if resize is None:
        raise ModelSourceError(f"{model.source} detects at {size[1]}x{size[0]} (width x height); it cannot take the "
                               f"input {model.input_spec.shape}")
    try:
        parse_size(of_shape(model.input_spec.shape))  # a size from a file: bounded before anchors are built for it
    except ConfigError as exc:
        raise ModelSourceError(f"{model.source}: {exc}") from None
    model.module = resize(tuple(model.input_spec.shape[2:4]))
    model.head = head_record(model.module)


# -- torch sources ---------------------------------------------------------------------
def arch_for_dataset(arch: str, classes: int, channels: int, size: int | str | None = None) -> str:
    """Add num_classes / in_channels (/ size, where given) to an architecture source unless it names them."""
    base, _, query = arch.partition("?")
    params = [p for p in query.split("&") if p]
    names = {p.split("=")[0] for p in params}
    params += [f"num_classes={classes}"] if "num_classes" not in names else []
    params += [f"in_channels={channels}"] if "in_channels" not in names and channels != 3 else []
    params += [f"size={size}"] if size and "size" not in names else []
    return base + ("?" + "&".join(params) if params else "")


def with_query(source: str, **values: Any) -> str:
    """``source`` with these query parameters set (replacing any of the same name)."""
    base, _, query = source.partition("?")
    params = [p for p in query.split("&") if p and p.split("=")[0] not in values]
    params += [f"{k}={v}" for k, v in values.items()]
    return base + ("?" + "&".join(params) if params else "")


def _split_query(text: str) -> tuple[str, dict[str, Any]]:
    base, _, query = text.partition("?")
    return base, {k: _literal(v) for k, v in parse_qsl(query, keep_blank_values=True)}


def _literal(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def _refuse_downloads(source: str, kwargs: dict[str, Any], origin: str | None) -> None:
    """A file's architecture carries its weights in the file: it may not make edgeopt fetch any."""
    asked = [k for k in DOWNLOADS if k in kwargs and kwargs[k] not in (None, False)]
    if origin is not None and asked:
        raise ModelSourceError(f"{origin} asks {source.partition('?')[0]} to download weights ({asked[0]}=); a "
                               "file's architecture never fetches anything: name the weights on the command line")


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Downloaded weights load as weights only: torch.hub reads its cache with ``weights_only=False``, so a
    pickle planted in ``$TORCH_HOME`` would run. PyTorch's own switch forces every ``torch.load`` safe."""
    before = os.environ.get(WEIGHTS_ONLY)
    os.environ[WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(WEIGHTS_ONLY, None)
        else:
            os.environ[WEIGHTS_ONLY] = before


def _from_torchvision(source: str, origin: str | None = None) -> LoadedModel:
    import torchvision

    name, kwargs = _split_query(source.removeprefix("torchvision:"))
    _refuse_downloads(source, kwargs, origin)
    available = torchvision.models.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise ModelSourceError(f"torchvision has no model {name!r}{hint}")
    arch = "torchvision:" + name + ("?" + "&".join(f"{k}={v}" for k, v in kwargs.items() if k != "weights") if kwargs else "")
    arch = arch.rstrip("?")
    weights_name = kwargs.pop("weights", None)
    in_channels = kwargs.pop("in_channels", 3)
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        kwargs.setdefault("weights_backbone", None)  # detectors', segmenters' default is a download: only when asked
    if name in torchvision.models.list_models(module=torchvision.models.detection):
        if "num_classes" in kwargs:  # edgeopt counts object classes; torchvision adds the background
            kwargs["num_classes"] += 1
    try:
        weights = torchvision.models.get_model_weights(name).verify(weights_name) if weights_name else None
    except ValueError as exc:
        raise ModelSourceError(f"torchvision:{name} has no weights {weights_name!r} ({exc})") from None
    try:
        with weights_only_loads():
            module = torchvision.models.get_model(name, weights=weights, **kwargs)
    except TypeError as exc:
        raise ModelSourceError(f"torchvision:{name} does not accept {sorted(kwargs)}: {exc}") from None
    except Exception as exc:  # weight download fails without internet
        raise ModelSourceError(f"could not build torchvision:{name} ({exc}); without internet, leave out weights=") from None
    classification = name in torchvision.models.list_models(module=torchvision.models)
    if name in torchvision.models.list_models(module=torchvision.models.detection):
        return _torchvision_detector(source, name, arch, module, weights, in_channels)
    if in_channels != 3:
        from edgeopt.models.layer_shapes import adapt_input_channels

        adapt_input_channels(module, in_channels)
    spec, labels = _torchvision_input(name, weights, classification)
    if in_channels != 3:
        spec = replace(spec, shape=(1, in_channels, *spec.shape[2:]), preprocess=None)
    return LoadedModel(source, spec, module=module, arch=arch,
                       task="classification" if classification else "unknown", labels=labels)


def _torchvision_detector(source: str, name: str, arch: str, module: Any, weights: Any, in_channels: int) -> LoadedModel:
    """A torchvision SSD cut at its head, fed the way its own transform feeds it (fixed size, its mean/std)."""
    from edgeopt.models.detectors import wrap_torchvision

    transform = module.transform
    if in_channels != 3:
        from edgeopt.models.layer_shapes import adapt_input_channels

        adapt_input_channels(module.backbone, in_channels)
    graph = wrap_torchvision(name, module)
    channels = "GRAY" if in_channels == 1 else "RGB"
    mean, std = (tuple(transform.image_mean), tuple(transform.image_std)) if in_channels == 3 else ((0.5,), (0.5,))
    spec = InputSpec((1, in_channels, *graph.size), preprocess=Preprocess(mean=mean, std=std, channels=channels))
    categories = list(weights.meta.get("categories", [])) if weights is not None else []
    labels = categories[1:] if categories else None  # column 0 is the background
    return LoadedModel(source, spec, module=graph, arch=arch, task="detection", labels=labels)


def _torchvision_input(name: str, weights: Any, classification: bool) -> tuple[InputSpec, list[str] | None]:
    size = 299 if name.startswith("inception") else 224
    if weights is not None:
        transforms = weights.transforms()
        crop = int(transforms.crop_size[0])
        preprocess = Preprocess(resize=int(transforms.resize_size[0]), crop=(crop, crop),
                                mean=tuple(transforms.mean), std=tuple(transforms.std))
        return InputSpec((1, 3, crop, crop), preprocess=preprocess), list(weights.meta.get("categories", [])) or None
    preprocess = Preprocess(resize=round(size * 256 / 224), crop=(size, size)) if classification else None
    return InputSpec((1, 3, size, size), preprocess=preprocess), None


def _from_timm(source: str, origin: str | None) -> LoadedModel:
    """A timm model, fed as its pretrained config says; from a file, only architecture arguments pass."""
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ModelSourceError(f"{source} needs timm: pip install timm") from None
    name, kwargs = _split_query(source.removeprefix("timm:"))
    _refuse_downloads(source, kwargs, origin)
    loaders = sorted(set(kwargs) & TIMM_LOADERS)
    if loaders:  # timm would read that file (with pickle) or config: weights come in a checkpoint instead
        raise ModelSourceError(f"{origin or source} passes {loaders[0]}= to timm, which would read it with pickle; "
                               "save the weights as .safetensors and load them with --arch timm:NAME")
    loose = sorted(set(kwargs) - TIMM_ARGUMENTS) if origin is not None else []
    if loose:
        raise ModelSourceError(f"{origin} passes {loose[0]}= to timm; from a file edgeopt passes only "
                               f"{', '.join(sorted(TIMM_ARGUMENTS))}: name the architecture with --arch")
    if name not in timm.list_models() and name not in timm.list_pretrained():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ModelSourceError(f"timm has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    channels = kwargs.pop("in_channels", kwargs.pop("in_chans", 3))
    try:
        with weights_only_loads():
            module = timm.create_model(name, in_chans=channels, **kwargs)
    except Exception as exc:  # unknown arguments (TypeError), a failed weight download without internet, ...
        raise ModelSourceError(f"could not build {source} ({first_line(exc)})") from None
    config = resolve_data_config({}, model=module)
    size = int(config["input_size"][-1])
    mean, std = (tuple(config["mean"]), tuple(config["std"])) if channels == 3 else ((0.5,), (0.5,))
    preprocess = Preprocess(resize=round(size / config.get("crop_pct", 0.875)), crop=(size, size), mean=mean, std=std,
                            channels="GRAY" if channels == 1 else "RGB")
    arch = "timm:" + name + "".join(f"{'&' if i else '?'}{k}={v}" for i, (k, v) in enumerate(
        [(k, v) for k, v in {**kwargs, "in_channels": channels}.items() if k != "pretrained" and (k, v) != ("in_channels", 3)]))
    return LoadedModel(source, InputSpec((1, channels, size, size), preprocess=preprocess), module=module, arch=arch,
                       task="classification")


def _from_factory(source: str, given: InputSpec | None, origin: str | None = None) -> LoadedModel:
    import torch

    target, kwargs = _split_query(source)
    factory = import_object(target, origin, "--arch")
    try:
        module = factory(**kwargs)
    except Exception as exc:  # unknown keyword arguments, sizes too large to allocate, ...: the factory's failure
        call = f"{target}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        raise ModelSourceError(f"{call} failed: {first_line(exc)}; check the architecture's arguments") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelSourceError(f"{target} returned {type(module).__name__}, not a torch.nn.Module")
    return LoadedModel(source, given or infer_input_spec(module, source), module=module, arch=current_name(source))


def infer_input_spec(module: "torch.nn.Module", source: str) -> InputSpec:
    """Guess the input from the first layer: Conv2d -> 1xCx224x224, Linear -> 1xF."""
    import torch

    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            return InputSpec((1, layer.in_channels, 224, 224))
        if isinstance(layer, torch.nn.Conv1d):
            return InputSpec((1, layer.in_channels, 256))
        if isinstance(layer, torch.nn.Linear):
            return InputSpec((1, layer.in_features))
    raise ConfigError(f"cannot infer the input shape of {source}; give it (input 1x3x224x224, say: --input of export, "
                      "bench and profile), or save the model as a checkpoint that carries it")


def _from_file(path: Path, arch: str | None, given: InputSpec | None, origin: str | None) -> LoadedModel:
    """A model file, dispatched on what its bytes are (``formats.check_loadable`` refuses the rest)."""
    from edgeopt.core.formats import DESCRIPTION, check_loadable

    kind = check_loadable(path)
    if kind == "onnx":
        return _from_onnx(path, given)
    if kind in ("safetensors", "pickle", "torch-zip"):
        return _from_checkpoint(path, arch, given, kind, origin)
    if kind in ("torchscript", "pt2"):
        return _from_program(path, kind, given)
    raise ModelSourceError(f"{path} is {DESCRIPTION[kind]}, already compiled for a runtime: run it with `edgeopt bench`, "
                           f"`serve` or `predict`; a model source is a PyTorch model or an ONNX file")


def _from_program(path: Path, kind: str, given: InputSpec | None) -> LoadedModel:
    """A trusted TorchScript or .pt2 archive (the caller said so), as it is: its input shape must be given."""
    import torch

    if given is None:
        raise ConfigError(f"{path}: give the input shape of a {kind} model (--input 1x3x224x224, say)")
    try:
        module = torch.jit.load(str(path), map_location="cpu") if kind == "torchscript" else torch.export.load(str(path)).module()
    except Exception as exc:  # a damaged archive raises RuntimeError, zipfile errors, ...
        raise ModelSourceError(f"{path} could not be loaded as {kind} ({first_line(exc)})") from None
    if kind == "pt2":  # an exported program keeps the batch it was exported with
        given = replace(given, dynamic_batch=False)
    return LoadedModel(str(path), given, module=module)


def _from_checkpoint(path: Path, arch: str | None, given: InputSpec | None, kind: str = "safetensors",
                     origin: str | None = None) -> LoadedModel:
    if not path.is_file():
        raise ModelSourceError(f"checkpoint {path} does not exist")
    meta: dict[str, str] = {}
    if kind == "safetensors":
        state, meta = _read_safetensors(path)
    else:
        state = _read_state_dict(path)
    arch_origin = origin if arch else str(path)  # the checkpoint's own record of its arch is data, like the rest
    arch = arch or meta.get(META_ARCH)
    if not arch:
        raise ModelSourceError(f"checkpoint {path} holds weights only; name its architecture with --arch (e.g. torchvision:resnet18)")
    model = assemble(state, meta, arch, given, arch_origin, str(path))
    model.source = str(path)
    return model


def assemble(state: dict[str, Any], meta: dict[str, str], arch: str, given: InputSpec | None, origin: str | None,
             where: str, counters_optional: bool = False) -> LoadedModel:
    """The model ``arch`` holding ``state``, described by a checkpoint's ``meta`` (input, labels, task, widths).

    ``origin`` says who named ``arch`` (a file, a federation server: names from there pass the trust gate
    first); ``where`` names the weights in errors. Every tensor must fit: nothing missing, nothing extra
    (``counters_optional``: integer buffers such as BatchNorm's batch count may be missing; they start at 0).
    """
    model = _from_architecture(arch.strip(), given, origin)
    if META_WIDTHS in meta:
        from edgeopt.models.layer_shapes import reshape

        reshape(model.module, json.loads(meta[META_WIDTHS]), state)
    try:
        result = model.module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        mismatch = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise ModelSourceError(f"{where} does not fit {arch}: {mismatch}; check --arch and its options") from None
    tensors = model.module.state_dict()
    missing = [key for key in result.missing_keys
               if not (counters_optional and not tensors[key].is_floating_point())]
    if missing or result.unexpected_keys:
        raise ModelSourceError(
            f"{where} does not fit {arch}: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}; check --arch and its options (e.g. ?num_classes=)"
        )
    if META_INPUT in meta:
        model.input_spec = InputSpec.from_dict(json.loads(meta[META_INPUT]))
    model.labels = json.loads(meta[META_LABELS]) if META_LABELS in meta else model.labels
    model.task = meta.get(META_TASK, model.task)
    return model


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelSourceError(f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt") from None


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelSourceError(
            f"{path} holds more than plain weights (a pickled object: {str(exc).splitlines()[0]}); edgeopt never "
            "unpickles code: save model.state_dict() or use .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ModelSourceError(f"{path} is not a readable PyTorch checkpoint ({exc}); it may be truncated or corrupt") from None
    for key in ("state_dict", "model_state_dict", "model"):  # common training-script wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelSourceError(f"{path} does not hold a state dict")
    return state


def save_checkpoint(model: LoadedModel, path: str | Path) -> Path:
    """Write ``model``'s weights as safetensors, carrying arch, InputSpec, labels and task."""
    from safetensors.torch import save_model

    path = Path(path)
    meta = checkpoint_meta(model)
    tmp = path.with_name(path.name + ".partial")
    save_model(model.module, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def parameter_count(arch: str, origin: str | None) -> int:
    """Numbers in the floating-point tensors of ``arch`` as built, counted on PyTorch's meta device (nothing
    allocated); the name passes the trust gate first, as every architecture a file or a request names."""
    import torch

    from edgeopt.core.trust import UntrustedName

    try:
        with torch.device("meta"):
            model = _from_architecture(arch.strip(), None, origin)
    except UntrustedName:
        raise
    except ModelSourceError:  # one that computes with tensors as it is built (SSDlite's anchors): built for real
        model = _from_architecture(arch.strip(), None, origin)
    return sum(t.numel() for t in model.module.state_dict().values() if t.is_floating_point())


def checkpoint_meta(model: LoadedModel) -> dict[str, str]:
    """What a checkpoint records beside the weights: arch, InputSpec, task, layer widths, labels (``assemble`` reads it)."""
    from edgeopt.models.layer_shapes import describe

    if model.module is None or model.arch is None:
        raise ConfigError("only a PyTorch model with a known architecture can be saved as a checkpoint")
    meta = {META_ARCH: model.arch, META_INPUT: json.dumps(model.input_spec.to_dict()), META_TASK: model.task,
            META_WIDTHS: json.dumps(describe(model.module))}
    if model.labels:
        meta[META_LABELS] = json.dumps(model.labels)
    return meta


def declare_detector(model: LoadedModel, convention: str, labels: list[str] | None = None) -> LoadedModel:
    """``model`` (an ONNX or PyTorch detector edgeopt did not build) read as a detector whose outputs
    follow ``convention`` (``yolov8``: (N, 4 + classes, A); ``yolov5``: (N, A, 5 + classes), boxes
    cx, cy, w, h in input pixels). Its input is fed as Ultralytics feeds it: letterboxed, RGB / 255."""
    from edgeopt.tasks.detection.boxes import DetectionHead

    if convention not in ("yolov8", "yolov5"):
        raise ConfigError(f"--outputs takes yolov8 or yolov5 (a declared output layout), not {convention!r}")
    spec = model.input_spec
    if len(spec.shape) != 4 or spec.shape[1] not in (1, 3):
        raise ConfigError(f"a detector takes images (N, C, H, W); this model takes {spec.shape}")
    outputs = model.reference()(spec.example(batch=1))
    if len(outputs) != 1 or outputs[0].ndim != 3:
        raise ConfigError(f"a {convention} detector has one (N, ..., ...) output; this model has "
                          f"{[tuple(o.shape) for o in outputs]}")
    classes = outputs[0].shape[1] - 4 if convention == "yolov8" else outputs[0].shape[2] - 5
    if classes < 1 or (labels and len(labels) != classes):
        raise ConfigError(f"the output {tuple(outputs[0].shape)} leaves {classes} classes for {convention}"
                          + (f", but {len(labels)} labels were given" if labels else ""))
    preprocess = Preprocess(mean=(0.0,) * spec.shape[1], std=(1.0,) * spec.shape[1],
                            channels="GRAY" if spec.shape[1] == 1 else "RGB", fit="letterbox")
    head = DetectionHead(convention, classes, image_size=tuple(spec.shape[2:4]))
    return replace(model, task="detection", head=head.to_dict(), labels=labels or model.labels,
                   input_spec=replace(spec, preprocess=spec.preprocess if spec.preprocess and spec.preprocess.fit ==
                                      "letterbox" else preprocess))


# -- ONNX sources ----------------------------------------------------------------------
def _from_onnx(path: Path, given: InputSpec | None) -> LoadedModel:
    if not path.is_file():
        raise ModelSourceError(f"ONNX file {path} does not exist")
    import onnx

    from edgeopt.core.onnx_external import check_external_data

    check_external_data(path)  # before anything follows those paths
    try:
        graph_model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ... for bad files
        raise ModelSourceError(f"{path} is not a valid ONNX model ({first_line(exc)}); the file may be truncated or "
                               "corrupt: export it again") from None
    try:
        onnx.checker.check_model(str(path))  # by path, so external weight files are checked too
    except Exception as exc:  # ValidationError, ...
        raise ModelSourceError(f"{path} is not a valid ONNX model ({first_line(exc)}); the file may be truncated or "
                               "corrupt: export it again") from None
    initializers = {init.name for init in graph_model.graph.initializer}
    inputs = [i for i in graph_model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelSourceError(f"{path} has {len(inputs)} inputs; edgeopt handles single-input models")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    if any(d is None for d in dims[1:]) and given is None:
        raise ConfigError(f"{path} has a dynamic input shape {dims}; give the shape (input 1x3x224x224, say: "
                          "--input of export, bench and profile)")
    if given is not None:
        return LoadedModel(str(path), replace(given, name=inputs[0].name, dtype=dtype), onnx_path=path)
    spec = InputSpec((dims[0] or 1, *dims[1:]), name=inputs[0].name, dtype=dtype, dynamic_batch=dims[0] is None)
    return LoadedModel(str(path), spec, onnx_path=path)


# -- reference runners -----------------------------------------------------------------
def flatten_outputs(output: Any) -> list[Any]:
    """Flatten a tensor, or nested tuples/lists/dicts of tensors, in a stable order."""
    if isinstance(output, (list, tuple)):
        return [leaf for item in output for leaf in flatten_outputs(item)]
    if isinstance(output, dict):
        return [leaf for key in output for leaf in flatten_outputs(output[key])]
    return [output]


def torch_runner(module: "torch.nn.Module") -> Callable[[np.ndarray], list[np.ndarray]]:
    import torch

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch)))
        return [t.detach().float().numpy() for t in flatten_outputs(out)]

    return run


def onnx_runner(path: Path | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: [np.asarray(o) for o in session.run(None, {name: batch})]
