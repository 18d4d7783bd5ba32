"""Federated fine-tuning on Flower: learn from the sites' images without moving them.

A federation is real Flower processes that reach each other over the network only: one
SuperLink (``edgeopt federate server``, which also submits edgeopt's own Flower app to it) and
one SuperNode per site (``edgeopt federate client --data LOCAL``). Each round the server sends
the global model's arrays; every sampled site fine-tunes them on its own images with edgeopt's
one fine-tune (FedProx's proximal term when asked, Flower's local differential privacy when the
site asks) and replies with arrays of the model's shapes, its example count and scalar metrics.
The server aggregates (FedAvg, FedProx, FedAdam), evaluates, and checkpoints the global model
and the round after every round, so ``--resume`` continues after a crash.

The modules, in the order a round touches them:

- ``settings``: the federation's run configuration and a site's own settings (validated).
- ``weights``: a model to and from Flower records; what a record may hold (a server's or a
  client's) is checked before it touches a model.
- ``server_app`` / ``client_app``: the Flower ServerApp and ClientApp (import ``flwr``).
- ``state``: the global model and round, written after every round.
- ``processes``: the SuperLink, the SuperNodes and the run submission as child processes.

After the last round ``edgeopt.api.federate`` takes the global model through a recipe into a
verified artifact and publishes it as a new version into a served model repository.
"""
