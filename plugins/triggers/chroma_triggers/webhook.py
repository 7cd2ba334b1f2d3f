"""The ``webhook`` handler: POST the trigger as JSON, with a timeout and bounded retries."""

from __future__ import annotations

import time

import httpx
import pyarrow as pa

BACKOFF_SECONDS = 0.5


def post_trigger(url: str, trigger: dict, items: pa.Table, *, timeout: float, retries: int) -> dict:
    """Deliver the trigger; returns the delivery record (never raises for network faults).

    A 2xx answer is success. 4xx answers other than 408/429 are not retried: the receiver
    refused this payload and will refuse it again.
    """
    payload = {"trigger": trigger, "items": items.to_pylist()}
    attempts, error, status = 0, None, None
    for attempt in range(1, max(1, retries) + 1):
        attempts = attempt
        try:
            response = httpx.post(url, json=payload, timeout=timeout)
            status = response.status_code
            if 200 <= status < 300:
                return {"ok": True, "url": url, "status_code": status, "attempts": attempts}
            error = f"HTTP {status}: {response.text[:200]}"
            if 400 <= status < 500 and status not in (408, 429):
                break
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    return {"ok": False, "url": url, "status_code": status, "attempts": attempts, "error": error}
