"""The exception tree of edgeopt.

Every error a user can cause is an ``EdgeoptError``; its message is one sentence that
says what is wrong and what to do. The CLI prints it on one line and exits non-zero.
Anything else that escapes is a bug in edgeopt.

    EdgeoptError
    ├── ConfigError            an option or combination of options is invalid
    ├── ModelSourceError       a model source cannot be resolved or loaded
    ├── InputError             an input array has the wrong shape, dtype or values
    ├── ArtifactError          an artifact folder is missing, incomplete or altered
    └── BackendError           a runtime could not compile, load or run a model
        ├── BackendUnavailable the runtime's library or hardware is absent here
        └── ParityError        the compiled model's outputs diverge from the reference
"""

from __future__ import annotations


class EdgeoptError(Exception):
    """Base of every error edgeopt raises on purpose."""


class ConfigError(EdgeoptError, ValueError):
    """An option, or a combination of options, is invalid."""


class ModelSourceError(EdgeoptError):
    """A model source string or file cannot be resolved into a model."""


class InputError(EdgeoptError, ValueError):
    """An input array does not match the model's InputSpec."""


class ArtifactError(EdgeoptError):
    """An artifact folder is missing, incomplete, or does not match its manifest."""


class BackendError(EdgeoptError):
    """A runtime failed to compile, load or run a model."""


class BackendUnavailable(BackendError):
    """The runtime's library or the hardware it needs is not present on this machine."""


class ParityError(BackendError):
    """The compiled model's outputs diverge from the FP32 reference beyond tolerance.

    ``detail`` names the failed criterion; ``parity`` is the full parity record.
    """

    def __init__(self, message: str, detail: str = "", parity: dict | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.parity = parity


def first_line(exc: BaseException) -> str:
    """The first line of a library's exception message (its type name when it has none): what an
    EdgeoptError quotes when it wraps a runtime's, a parser's or an exporter's failure."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
