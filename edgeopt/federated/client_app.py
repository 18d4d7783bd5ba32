"""edgeopt's Flower ClientApp: a site fine-tunes the global model on its own images.

Each round's train message holds the global model's arrays and a ConfigRecord with the
fine-tune settings and the model's description. The site rebuilds the model (the trust gate
first, then every array checked against it), fine-tunes it with edgeopt's one fine-tune on
the data its SuperNode was started with (``--node-config data=...``; FedProx's proximal term
when the server sends ``proximal-mu``; distillation from the global model when asked), and
replies with exactly two records: the model's floating-point arrays and a MetricRecord of
scalars (``num-examples``, ``train-loss``, ``val`` and the privacy parameters ``dp-epsilon``,
``dp-delta``, ``dp-clip``, ``dp-noise-std``, 0 when off: every site's metrics have the same keys,
as Flower's strategies need). No image, file name or label leaves it; an error leaves as its kind.

When the site asked for differential privacy (``dp-clip`` > 0 in its node config), Flower's
``LocalDpMod`` clips the update and adds Gaussian noise before the reply leaves.

After a round, the server may query the sites that trained for the aggregate's BatchNorm
statistics on their images (``federated.statistics``): the reply holds per-channel means and
variances and the image count, nothing else. A site with differential privacy declines (the
statistics would leave without noise).
"""

from __future__ import annotations

import copy
import logging

from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod

from edgeopt.core.errors import EdgeoptError
from edgeopt.federated.settings import SiteSettings, local_fine_tune, proximal_mu
from edgeopt.federated.weights import ARRAYS, CONFIG, METRICS, rebuild, to_arrays

SERVER = "the federation server"
log = logging.getLogger("edgeopt.federated.site")


def site_privacy(msg: Message, context: Context, call_next) -> Message:
    """Flower's LocalDpMod around a training reply, when this site asked for differential privacy."""
    site = SiteSettings.from_node_config(context.node_config)
    if msg.metadata.message_type != MessageType.TRAIN or not site.private:
        return call_next(msg, context)
    return LocalDpMod(clipping_norm=site.dp_clip, sensitivity=site.dp_clip, epsilon=site.dp_epsilon,
                      delta=site.dp_delta)(msg, context, call_next)


class SiteError(Exception):
    """What a server learns when a site cannot train: a category, never the site's paths or data."""


app = ClientApp(mods=[site_privacy])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round at this site. Any failure reaches the server as a SiteError naming its kind only (Flower
    sends an exception's text to the server, and a site's errors name its files); the site's own log
    (its SuperNode's) has the whole story."""
    site = SiteSettings.from_node_config(context.node_config)
    try:
        config = msg.content.config_records[CONFIG]
        tune, mu = local_fine_tune(config), proximal_mu(config)
        model = rebuild(config, msg.content.array_records[ARRAYS], SERVER)
    except (EdgeoptError, KeyError, TypeError, ValueError) as exc:
        log.error("refused the server's round: %s", exc)
        raise SiteError("the site refused the server's model or settings (its log says why)") from None
    try:
        seed = (int(config.get("seed", 0)) + int(config.get("server-round", 0))) % 2**31
        metrics = fine_tune_at_site(model, site, tune, mu, seed=seed)
    except Exception as exc:  # noqa: BLE001 - whatever it was, its text stays here
        log.exception("training failed: %s", exc)
        raise SiteError(f"the site could not train this round ({type(exc).__name__}; its log says why)") from None
    metrics.update(site.privacy_record())
    return Message(content=RecordDict({ARRAYS: to_arrays(model.module), METRICS: MetricRecord(metrics)}), reply_to=msg)


@app.query()
def batchnorm_statistics(msg: Message, context: Context) -> Message:
    """The aggregate's BatchNorm statistics on this site's training images (declined under differential privacy)."""
    site = SiteSettings.from_node_config(context.node_config)
    if site.private:
        raise SiteError("the site keeps differential privacy: it sends no statistics")
    try:
        config = msg.content.config_records[CONFIG]
        batch_size = local_fine_tune(config).batch_size
        model = rebuild(config, msg.content.array_records[ARRAYS], SERVER)
    except (EdgeoptError, KeyError, TypeError, ValueError) as exc:
        log.error("refused the server's statistics query: %s", exc)
        raise SiteError("the site refused the server's model or settings (its log says why)") from None
    try:
        stats, count = statistics_at_site(model, site, batch_size)
    except Exception as exc:  # noqa: BLE001 - whatever it was, its text stays here
        log.exception("measuring statistics failed: %s", exc)
        raise SiteError(f"the site could not measure statistics ({type(exc).__name__}; its log says why)") from None
    record = ArrayRecord({name: Array(array) for name, array in stats.items()})
    return Message(content=RecordDict({ARRAYS: record, METRICS: MetricRecord({"num-examples": count})}), reply_to=msg)


def statistics_at_site(model, site: SiteSettings, batch_size: int) -> tuple[dict, int]:
    """The BatchNorm statistics of ``model`` on the site's training images, and how many images."""
    import torch

    from edgeopt.federated.statistics import measure
    from edgeopt.tasks import task_of

    if site.threads:
        torch.set_num_threads(site.threads)
    images = task_of(model).load(site.data, model.input_spec).train.images
    if len(images) < 2:
        raise ValueError("fewer than two training images")
    return measure(model, images, batch_size), len(images)


def fine_tune_at_site(model, site: SiteSettings, tune, mu: float, seed: int) -> dict[str, float | int]:
    """Fine-tune ``model`` in place on the site's training split; the scalars the reply carries."""
    import torch

    from edgeopt.passes.base import PassContext
    from edgeopt.passes.finetune import fine_tune
    from edgeopt.tasks import task_of

    if site.threads:
        torch.set_num_threads(site.threads)
    task = task_of(model)
    splits = task.load(site.data, model.input_spec)
    teacher = copy.deepcopy(model) if tune.distill else model
    context = PassContext(teacher=teacher, splits=splits, task=task, seed=seed, resume=False, show_progress=False)
    penalty = proximal_term(model.module, mu) if mu > 0 else None
    result = fine_tune(model.module, model.input_spec, tune, context, penalty=penalty)
    history = result.history if result else []
    return {"num-examples": len(splits.train), "train-loss": float(history[-1]["train_loss"]) if history else 0.0,
            "val": float(result.best_val) if result else 0.0}


def proximal_term(module, mu: float):
    """FedProx's μ/2·‖w − w_global‖² over the trainable weights, against the weights as received."""
    anchors = [p.detach().clone() for p in module.parameters()]

    def penalty(current) -> "torch.Tensor":
        return mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(current.parameters(), anchors))

    return penalty
