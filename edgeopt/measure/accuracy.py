"""Accuracy on labelled data, and fidelity to a reference model, for any runnable model.

Anything that maps an input batch to output arrays can be evaluated: a backend Session
(``session.run``), or ``LoadedModel.reference()``. Classification metrics are top-1,
top-5, per-class accuracy and the confusion matrix; fidelity is top-1 agreement and the
SQNR of the logits against the reference's.

Example:
    >>> report = evaluate(session.run, splits.test, artifact.input_spec)   # doctest: +SKIP
    >>> report["top1"]                                                      # doctest: +SKIP
    0.956
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from edgeopt.data import ImageDataset, to_input
from edgeopt.measure.fidelity import sqnr_db, top1_agreement
from edgeopt.spec import InputSpec

# A batch in, output arrays out: Session.run and LoadedModel.reference() both fit.
Runner = Callable[[np.ndarray], list[np.ndarray]]


def predict(run: Runner, dataset: ImageDataset, spec: InputSpec, batch_size: int = 64) -> np.ndarray:
    """Logits (first output) for every image, batched within the artifact's batch bounds."""
    if not spec.dynamic_batch:
        batch_size = spec.shape[0]
    elif spec.max_batch:
        batch_size = min(batch_size, spec.max_batch)
    chunks = []
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start:start + batch_size]
        if not spec.dynamic_batch and len(images) < batch_size:  # pad the last fixed-size batch
            images = np.concatenate([images, np.repeat(images[-1:], batch_size - len(images), axis=0)])
        chunks.append(np.asarray(run(to_input(images, spec))[0])[: len(dataset) - start])
    return np.concatenate(chunks)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax is the label."""
    return float(np.mean(np.asarray(logits).argmax(axis=1) == labels))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    predicted = logits.argmax(axis=1)
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        name: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
        for i, name in enumerate(classes)
    }
    return {
        "top1": top1_accuracy(logits, labels),
        "top5": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "samples": int(len(labels)),
    }


def fidelity(reference_logits: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """How closely ``logits`` follow the reference model's on the same images."""
    sqnr = sqnr_db(reference_logits, logits)
    return {"top1_agreement": top1_agreement(reference_logits, logits),
            "sqnr_db": None if np.isinf(sqnr) else sqnr}


def evaluate(run: Runner, dataset: ImageDataset, spec: InputSpec, reference: Runner | None = None,
             batch_size: int = 64) -> dict[str, Any]:
    """Classification metrics of ``run`` on ``dataset``; with ``reference``, fidelity too."""
    logits = predict(run, dataset, spec, batch_size)
    report = classification_metrics(logits, dataset.labels, dataset.classes)
    if reference is not None:
        report["fidelity"] = fidelity(predict(reference, dataset, spec, batch_size), logits)
    return report
