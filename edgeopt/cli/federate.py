"""``edgeopt federate server|client``: federated fine-tuning on Flower, back into a served artifact."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ThreadsOption
from edgeopt.federated.settings import FederationSettings, SiteSettings
from edgeopt.report.console import make_console

FEDERATION = FederationSettings(model="-", out="-")  # every default below is these settings'
SITE = SiteSettings(data="-")

federate = typer.Typer(help="Federated fine-tuning on Flower: the images stay at the sites, the model improves.",
                       no_args_is_help=True)
app.add_typer(federate, name="federate")


@federate.command("server")
def server_command(
    model: str = typer.Argument(..., help="The model to start from: a checkpoint from `edgeopt train` (.safetensors)."),
    out: Path = typer.Option(Path("out/federated"), "--out", "-o", help="Run folder: the global model after every round (rounds/), state.json, replies.jsonl, logs."),
    data: Optional[str] = typer.Option(None, "--data", help="The server's own data: the global model is scored on its test split after every round, and a --recipe trains and calibrates on it."),
    address: str = typer.Option("127.0.0.1:9092", "--address", help="Where the SuperLink listens (HOST:PORT); the sites connect here. 0.0.0.0:9092 for sites on other machines."),
    strategy: str = typer.Option(FEDERATION.strategy, "--strategy", help="fedavg | fedprox | fedadam"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help=f"Rounds in all (default {FEDERATION.rounds}; with --resume, the number the run was started with)."),
    clients_per_round: int = typer.Option(FEDERATION.clients_per_round, "--clients-per-round", help="Sites trained each round (0: every connected site)."),
    min_clients: int = typer.Option(FEDERATION.min_clients, "--min-clients", help="A round waits until this many sites are connected."),
    epochs: int = typer.Option(FEDERATION.epochs, "--epochs", help="Local epochs each site trains per round."),
    lr: float = typer.Option(FEDERATION.lr, "--lr"),
    optimizer: str = typer.Option(FEDERATION.optimizer, "--optimizer", help="adamw | sgd"),
    schedule: str = typer.Option(FEDERATION.schedule, "--schedule", help="constant | cosine | onecycle (within a round)"),
    round_schedule: str = typer.Option(FEDERATION.round_schedule, "--round-schedule", help="cosine | constant: the learning rate over the rounds (cosine: the last rounds take small steps and the global model settles)."),
    batch_size: int = typer.Option(FEDERATION.batch_size, "--batch-size"),
    distill: bool = typer.Option(FEDERATION.distill, "--distill/--no-distill", help="Sites fine-tune by distillation from the global model they received."),
    proximal_mu: float = typer.Option(FEDERATION.proximal_mu, "--mu", help="FedProx's proximal term μ (fedprox only)."),
    server_lr: float = typer.Option(FEDERATION.server_lr, "--server-lr", help="FedAdam's server learning rate η (fedadam only)."),
    bn_stats: bool = typer.Option(FEDERATION.bn_statistics, "--bn-stats/--no-bn-stats", help="After each round the sites measure the global model's BatchNorm statistics on their images (pooled by the server) instead of averaging their own; sites with differential privacy are not asked."),
    round_timeout: float = typer.Option(FEDERATION.round_timeout, "--round-timeout", help="Seconds a round waits for replies; then it aggregates the ones it has."),
    seed: int = typer.Option(FEDERATION.seed, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the federation in --out after its last finished round."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="After the last round, build the global model through this recipe.toml (from optimize, prune…)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Instead of --recipe: export the global model to this backend (with --precision)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (with --backend)."),
    publish: Optional[Path] = typer.Option(None, "--publish", help="A model repository (edgeopt serve --model-repository): the artifact becomes the next version of --name there."),
    name: str = typer.Option("model", "--name", help="The model's name in the --publish repository."),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Run a federation: a Flower SuperLink on --address, --rounds rounds with the sites that join it.

    The sites run `edgeopt federate client --server HOST:PORT --data THEIR_IMAGES`; their images never
    leave them. The global model is checkpointed after every round (--resume continues after a crash),
    then optionally built into a verified artifact and published into a served model repository.
    """
    from edgeopt.api import federate as run
    from edgeopt.core.errors import ConfigError
    from edgeopt.pipeline.recipe import ExportConfig, Recipe

    if recipe and backend:
        raise ConfigError("give --recipe or --backend, not both")
    if rounds is None:
        from edgeopt.federated.state import RunState

        saved = RunState.read(out) if resume else None
        rounds = saved.rounds if saved else FEDERATION.rounds
    settings = FederationSettings(
        model=model, out=str(out), data=data or "", strategy=strategy, rounds=rounds,
        clients_per_round=clients_per_round, min_clients=min_clients, epochs=epochs, lr=lr, optimizer=optimizer,
        schedule=schedule, round_schedule=round_schedule, batch_size=batch_size, distill=distill,
        proximal_mu=proximal_mu, server_lr=server_lr, bn_statistics=bn_stats, round_timeout=round_timeout, seed=seed)
    plan = recipe or (Recipe(model, data or "", export=ExportConfig(backend, precision)) if backend else None)
    console = make_console()
    console.print(f"[bold]federation[/]: sites connect at {address} (the SuperLink's fleet API only); they join with "
                  f"`edgeopt federate client --server {_reachable(address)} --data THEIR_IMAGES`")

    def on_round(entry: dict) -> None:
        scores = " ".join(f"{k} {v:.4f}" for k, v in entry.items() if isinstance(v, float) and k != "seconds")
        console.print(f"round {entry['round']}/{settings.rounds}: {entry.get('replies', 0)} of "
                      f"{entry.get('sampled', 0)} sites answered, {entry.get('seconds', 0):.1f} s {scores}")

    result = run(settings, address=address, resume=resume, recipe=plan, repository=publish, name=name,
                 threads=threads, on_round=on_round)
    console.print(f"global model after round {result.state.round}: {result.checkpoint}")
    if result.artifact is not None:
        console.print(f"artifact: {result.artifact.path} ({result.artifact.backend} {result.artifact.precision})")
    if result.published is not None:
        console.print(f"published: {result.published}")


@federate.command("client")
def client_command(
    data: str = typer.Option(..., "--data", help="This site's images (.npz or an ImageFolder tree, or a detection dataset): they never leave this machine."),
    server: str = typer.Option("127.0.0.1:9092", "--server", help="The SuperLink's HOST:PORT (`edgeopt federate server --address`)."),
    name: str = typer.Option(socket.gethostname(), "--name", help="This site's name in logs."),
    workdir: Path = typer.Option(Path("out/federated-site"), "--workdir", help="Where the SuperNode's logs go."),
    dp_clip: float = typer.Option(SITE.dp_clip, "--dp-clip", help="Differential privacy: clip each update to this L2 norm and add Gaussian noise (0: off)."),
    dp_epsilon: float = typer.Option(SITE.dp_epsilon, "--dp-epsilon", help="Privacy budget ε per round (with --dp-clip)."),
    dp_delta: float = typer.Option(SITE.dp_delta, "--dp-delta", help="Privacy δ per round (with --dp-clip)."),
    threads: int = typer.Option(SITE.threads, "--threads", help="Threads for local training (0: PyTorch's default)."),
) -> None:
    """Join a federation as one site: a Flower SuperNode that fine-tunes on --data each round it is asked to.

    Only the model's arrays, the example count and scalar metrics leave the site. Runs until Ctrl-C.
    """
    from edgeopt.federated.coordinator import join
    from edgeopt.federated.processes import Address

    site = SiteSettings(data=data, dp_clip=dp_clip, dp_epsilon=dp_epsilon, dp_delta=dp_delta, threads=threads)
    console = make_console()
    if site.private:
        console.print(f"differential privacy: clip {site.dp_clip}, (ε={site.dp_epsilon}, δ={site.dp_delta}) per round, "
                      f"noise σ={site.noise_std():.4g}")
    console.print(f"site {name}: joining the federation at {server} (Ctrl-C to leave)")
    stop = threading.Event()
    try:
        join(site, Address.parse(server), workdir, name, stop)
    except KeyboardInterrupt:
        stop.set()


@federate.command("adapt")
def adapt_command(
    model: str = typer.Argument(..., help="The federation's model (a checkpoint, e.g. the run's last rounds/round-NNN.safetensors)."),
    data: str = typer.Option(..., "--data", help="This site's images: their training split is measured; its test split scores the model before and after (a source without one is split 80/20, as everywhere in edgeopt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where the adapted checkpoint goes (.safetensors)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per measured batch."),
    arch: Optional[str] = typer.Option(None, "--arch", help="The architecture, for a weights-only checkpoint (as in edgeopt train)."),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Make the federation's model this site's own: its BatchNorm statistics measured on the site's images,
    the weights untouched (AdaBN). For a site whose images differ (a camera changed, other lighting). No
    training, nothing leaves the site; build the result like any checkpoint (edgeopt build/export).
    """
    import edgeopt

    adapted = edgeopt.adapt_batchnorm(model, data, out, batch_size=batch_size, arch=arch, threads=threads)
    console = make_console()
    console.print(f"adapted {adapted.layers} BatchNorm layers to {adapted.images} images: {adapted.checkpoint}")
    if adapted.before is not None:
        console.print(f"{adapted.metric} on the test split: {adapted.before:.4f} before, {adapted.after:.4f} after"
                      + ("" if adapted.after >= adapted.before else " (worse: keep the model as it came)"))


def _reachable(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{socket.gethostname()}:{port}" if host in ("0.0.0.0", "[::]", "::") else address
