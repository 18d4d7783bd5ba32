"""What the server exposes on ``/metrics`` for Prometheus (prometheus-client, its own registry).

Requests by model and status, latency and queue-time histograms, queue depth, batch sizes,
model load time and version, refused versions, a ladder's
answers and latency per rung and its current rung, and the process's memory and CPU
(prometheus-client's ProcessCollector: ``process_resident_memory_bytes``).

Only served models get a ``model`` label of their own; a request naming any other model is counted
under ``UNKNOWN_MODEL``, whose series exist from the start, so no URL can add a series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics, Counter, Gauge, Histogram, ProcessCollector, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
UNKNOWN_MODEL = "(unknown)"  # not a valid model name, so it can never be a served model's label
OBSERVED_ENDPOINTS = ("infer", "predict")


class ServerMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the output and help no dashboard
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("edgeopt_requests", "Requests answered, by model, endpoint and HTTP status.",
                                ["model", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram("edgeopt_request_seconds", "Time from request to response.", ["model", "endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_time = Histogram("edgeopt_queue_seconds", "Time the oldest request of a batch waited.", ["model"],
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.run_time = Histogram("edgeopt_batch_run_seconds", "Time one batch took to run.", ["model"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("edgeopt_batch_size", "Samples per batch run.", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("edgeopt_queue_depth", "Requests admitted and not yet answered (reading, queued or running).", ["model"],
                                 registry=self.registry)
        self.load_seconds = Gauge("edgeopt_model_load_seconds", "Time to verify, load and warm the served version.",
                                  ["model"], registry=self.registry)
        self.version = Gauge("edgeopt_model_version", "The version being served.", ["model"], registry=self.registry)
        self.current_rung = Gauge("edgeopt_ladder_rung", "The rung a ladder ran its last batch on (0: the most accurate).",
                                  ["model"], registry=self.registry)
        self.rung_answers = Counter("edgeopt_ladder_answers", "Requests a ladder answered, by rung.", ["model", "rung"],
                                    registry=self.registry)
        self.rung_latency = Histogram("edgeopt_ladder_answer_seconds", "Time from a request's queueing to its answer, "
                                      "by rung.", ["model", "rung"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.refused = Counter("edgeopt_model_versions_refused", "New versions refused (corrupt, tampered, failing).",
                               ["model"], registry=self.registry)
        for endpoint in OBSERVED_ENDPOINTS:  # an unknown name is answered 404 at once: its series
            self.requests.labels(UNKNOWN_MODEL, endpoint, "404")
            self.latency.labels(UNKNOWN_MODEL, endpoint)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
