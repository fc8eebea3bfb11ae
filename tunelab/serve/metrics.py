"""Prometheus metrics for GET /metrics: requests, tokens, latency, time to first token, queue.

Each app owns its CollectorRegistry, so two servers in one process (tests, a benchmark
beside the server) count separately instead of clashing on the global registry.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# seconds; a tiny CPU model answers in milliseconds, a 32-client load on a laptop in tens of seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    """The server's counters; `queue_depth` and `running` are read when /metrics is scraped."""

    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tunelab_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("tunelab_request_latency_seconds", "time from request to the "
                                 "last byte of its answer", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.ttft = Histogram("tunelab_time_to_first_token_seconds", "time from request to the "
                              "first generated token", ["model"], buckets=LATENCY_BUCKETS,
                              registry=r)
        self.prompt_tokens = Counter("tunelab_prompt_tokens", "prompt tokens read", ["model"],
                                     registry=r)
        self.completion_tokens = Counter("tunelab_completion_tokens", "tokens generated", ["model"],
                                         registry=r)
        self.in_flight = Gauge("tunelab_requests_in_flight", "requests being answered now",
                               registry=r)
        Gauge("tunelab_queue_depth", "generation requests waiting for a batch slot",
              registry=r).set_function(queue_depth)
        Gauge("tunelab_running_sequences", "sequences in the running batch",
              registry=r).set_function(running)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.completion_tokens.labels(model).inc(completion)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
