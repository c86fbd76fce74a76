"""Prometheus metrics and the ASGI middleware that times every request and caps body size.

The middleware is plain ASGI (not ``BaseHTTPMiddleware``, which costs a task and a queue per
request). It adds ``Server-Timing: app;dur=<ms>`` to every response: the time from the first
byte the app saw to the response start, which is what the benchmark reports as server time.
Routes are labelled by their template (``/predict``), unmatched paths as ``<unmatched>``, so a
scanner cannot blow up label cardinality.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("netsec_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("netsec_http_request_duration_seconds",
                                 "Time from request to response start, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("netsec_inference_seconds", "Model time per request (validation "
                                   "excluded), by request size", ["rows"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("netsec_predictions", "Predicted rows by class", ["class_"],
                                   registry=r)
        self.model_info = Info("netsec_model", "The model being served", registry=r)
        self.model_version = Gauge("netsec_model_version", "Version number of the served model",
                                   ["name"], registry=r)
        self.model_loaded = Gauge("netsec_model_loaded", "1 when a model is loaded (ready)",
                                  registry=r)
        self.log_dropped = Counter("netsec_prediction_log_dropped_rows",
                                   "Prediction-log rows dropped because the queue was full",
                                   registry=r)
        self.log_written = Counter("netsec_prediction_log_written_rows",
                                   "Prediction-log rows written to the sink", registry=r)

    def model_swapped(self, model) -> None:
        self.model_info.info({"name": model.name, "version": model.version,
                              "run_id": model.run_id or "", "model_class": model.model_class,
                              "inference_path": model.inference_path})
        try:
            self.model_version.labels(model.name).set(float(model.version))
        except ValueError:
            pass
        self.model_loaded.set(1)

    def count_predictions(self, n_threat: int, n_rows: int) -> None:
        if n_threat:
            self.predictions.labels("threat").inc(n_threat)
        if n_rows - n_threat:
            self.predictions.labels("benign").inc(n_rows - n_threat)

    @staticmethod
    def rows_bucket(n: int) -> str:
        return "1" if n == 1 else "2-64" if n <= 64 else "65-1000" if n <= 1000 else ">1000"


class BodyTooLarge(Exception):
    pass


class ObserveMiddleware:
    """Timing, counting, Server-Timing header and the request-body size cap."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500, "started": False}
        limit = self.max_body_bytes

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            self._observe(scope, 413, start)
            return

        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                dur_ms = (time.perf_counter() - start) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={dur_ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, timed_send)
        except BodyTooLarge:
            if not status["started"]:
                await _send_413(send, limit)
                status["code"] = 413
        finally:
            self._observe(scope, status["code"], start)

    def _observe(self, scope, code: int, start: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "<unmatched>"
        self.metrics.latency.labels(label).observe(time.perf_counter() - start)
        self.metrics.requests.labels(label, scope.get("method", ""), str(code)).inc()


def _content_length(scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _send_413(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body is larger than the limit of {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
