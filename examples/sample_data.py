"""Sample documents for the demo and the examples: an engineering knowledge base (runbooks,
incident notes, product docs) that changes over time, plus a small deterministic embedding.

The embedding is a stand-in for vectors computed upstream (provider "precomputed"): it hashes
words and character trigrams into a fixed number of dimensions, so similar wording gives
similar vectors without any model. Queries must be embedded with the same function.
"""

from __future__ import annotations

import hashlib
import math
import random
import re

SERVICES = ["checkout", "payments", "search", "inventory", "notifications", "auth", "billing", "shipping"]
TEAMS = ["platform", "commerce", "growth", "infra", "identity"]
CATEGORIES = ["runbook", "incident", "product", "policy"]

RUNBOOK = [
    "If {svc} latency rises above {ms} ms, first check the connection pool: saturated pools show as "
    "queueing in the {svc}-db dashboard. Scale the {svc} deployment to {n} replicas and drain the slowest node.",
    "To rotate {svc} credentials, create the new secret in the vault, roll the {svc} pods one at a time, "
    "and confirm that error rates stay flat for {n} minutes before revoking the old key.",
    "When the {svc} consumer lag on Kafka grows past {n} thousand records, look for a poison message in the "
    "dead-letter topic, then raise partitions or consumers; never reset offsets without a snapshot.",
]
INCIDENT = [
    "Incident {id}: {svc} returned HTTP 503 for {n} minutes after a config push disabled the health check. "
    "Root cause: a missing feature flag default. Fix: validate config in CI and alert on readiness flaps.",
    "Incident {id}: duplicate {svc} events after a consumer restart replayed offsets that were already applied. "
    "Mitigation: idempotent writes keyed by id and offset; {team} owns the follow-up.",
    "Incident {id}: {svc} p99 latency reached {ms} ms when a cache stampede hit the database at peak. "
    "Request coalescing and jittered expiry were added; the {team} team tracks the error budget.",
]
PRODUCT = [
    "The {svc} API supports idempotency keys: retrying a request with the same key within {n} hours returns "
    "the original response instead of charging or shipping twice.",
    "{svc} now streams change events to Kafka with Debezium, so downstream services see updates within "
    "seconds instead of waiting for the nightly batch export.",
    "Rate limits for {svc}: {n} requests per second per tenant, with bursts up to twice that; exceeding "
    "them returns HTTP 429 with a Retry-After header.",
]
POLICY = [
    "Access to {svc} production data requires an approved ticket and expires after {n} hours; every query "
    "is written to the audit log with the requester's identity.",
    "Customer data in {svc} is retained for {n} days and then deleted; backups follow the same schedule, "
    "and deletion requests are honoured within 30 days.",
]
TEMPLATES = {"runbook": RUNBOOK, "incident": INCIDENT, "product": PRODUCT, "policy": POLICY}
TITLES = {
    "runbook": "{svc} runbook: {topic}",
    "incident": "Incident {id} in {svc}",
    "product": "{svc} product note: {topic}",
    "policy": "{svc} data policy: {topic}",
}
TOPICS = ["latency", "credentials", "consumer lag", "retries", "rate limits", "retention", "access", "events"]


def make_doc(i: int, rng: random.Random, revision: int = 0) -> dict:
    """Document `i` at a given revision: same id, changed details."""
    local = random.Random(i * 1000 + revision)
    svc = SERVICES[i % len(SERVICES)]
    category = CATEGORIES[(i // len(SERVICES)) % len(CATEGORIES)]
    fields = {
        "svc": svc,
        "team": local.choice(TEAMS),
        "ms": local.choice([250, 400, 800, 1200, 2000]),
        "n": local.randint(2, 48),
        "id": f"INC-{1000 + i}",
        "topic": TOPICS[(i + revision) % len(TOPICS)],
    }
    body = local.choice(TEMPLATES[category]).format(**fields)
    if revision:
        body += f" Revised (revision {revision}): reviewed by the {fields['team']} team."
    return {
        "id": f"doc-{i:04d}",
        "title": TITLES[category].format(**fields),
        "body": body,
        "category": category,
        "service": svc,
        "team": fields["team"],
        "revision": revision,
    }


def embed(text: str, dim: int = 64) -> list[float]:
    """Deterministic hashed bag of words + character trigrams, L2-normalised."""
    vec = [0.0] * dim
    words = re.findall(r"[a-z0-9]+", text.lower())
    feats = list(words)
    for w in words:
        padded = f" {w} "
        feats.extend(padded[j : j + 3] for j in range(len(padded) - 2))
    for f in feats:
        h = hashlib.blake2b(f.encode(), digest_size=8).digest()
        idx = int.from_bytes(h[:4], "little") % dim
        sign = 1.0 if h[4] & 1 else -1.0
        vec[idx] += sign
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [round(x / norm, 6) for x in vec]
