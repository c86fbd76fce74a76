"""Prometheus metrics and the ASGI middleware that times and counts every request.

The middleware is plain ASGI (not ``BaseHTTPMiddleware``, which costs a task and a queue per
request). It adds ``Server-Timing: app;dur=<ms>`` to every response: the time from the first
byte the app saw to the response start, which is what the benchmark reports as server time.
Routes are labelled by their template (``/predict``), unmatched paths as ``<unmatched>``, so a
scanner cannot blow up label cardinality.

Series about the served model's traffic (predictions, input-contract counters, model time,
the log), verdicts, readiness and monitoring figures carry the label ``model`` (the registered
model), so two services of two data sets scraped by one Prometheus never mix; a labelled series
binds it with :class:`ModelSeries`, so no caller can leave it out. The HTTP series (requests,
latency, cross-site refusals) describe the service, not a model, and are told apart by the
scrape's own ``instance`` label. :attr:`Metrics.registry` is what anyone may scrape; :attr:`Metrics.details` (the
served version's run id and inference path, which names storage URIs) is added to ``/metrics``
only for a request with a configured key (``serving/access.py``).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from netsec_tasks.sinks import prom_label

# The request methods counted by name; any other (a client may send any token) counts as "other".
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Gauge name (netsec_monitoring_<name>) -> help; the value is the served version's tag
# netsec.monitoring.<name> written by the monitoring step (netsec_tasks/monitoring/publish.py).
MONITORING_GAUGES = {
    "drift_share": "Share of feature columns drifted in served traffic (last monitoring run)",
    "drift_detected": "1 when the last monitoring run found data-set drift in served traffic",
    "contract_violation_share": "Share of the new served rows that broke the input contract (last run)",
    "contract_violations": "1 when that share was over validation.max_invalid_share (a surge)",
    "live_f1": "Threat-class F1 from analysts' verdicts (last monitoring run)",
    "live_f1_low": "Lower end of live F1's confidence interval",
    "live_f1_high": "Upper end of live F1's confidence interval",
    "labelled": "Verdicts on the served version's predictions in the monitoring window",
    "threat_rate": "Share of the served version's predictions that were threats (last run)",
    "alert_rate": "Share of the served version's rows that raised an alert (last run; = threat_rate)",
    "expected_alert_rate": "The alert rate its operating point expects at the expected threat rate",
    "live_fpr": "False-positive rate among analysts' benign verdicts (last monitoring run)",
    "live_fpr_low": "Lower end of live FPR's interval (over the budget: a retraining reason)",
    "live_fpr_high": "Upper end of live FPR's interval",
    "trigger": "1 when the last monitoring run requested a retraining",
    "last_run_timestamp_seconds": "When the last monitoring run looked (Unix time)",
}

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ModelSeries:
    """A labelled metric with its first label, ``model``, bound to the served model:
    ``.labels(*rest)`` is ``metric.labels(model, *rest)``, so a caller cannot leave it out."""

    def __init__(self, metric, model_name: str):
        self.metric = metric
        self.model = model_name

    def labels(self, *rest: str):
        return self.metric.labels(self.model, *rest)


class Metrics:
    def __init__(self, model_name: str):
        self.model = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.details = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "netsec_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "netsec_http_request_duration_seconds",
            "Time from request to response start, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = ModelSeries(
            Histogram(
                "netsec_inference_seconds",
                "Model time per request (validation excluded), by model and request size",
                ["model", "rows"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            model_name,
        )
        self.explanation = Histogram(
            "netsec_explanation_seconds",
            "Time to compute per-row reasons (explain=K) per request, by request size",
            ["rows"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Per version: Production's decisions (role production, the answers) and the
        # challenger's on the same rows (role challenger, scored in shadow, never answered).
        self.predictions = Counter(
            "netsec_predictions",
            "Predicted rows by model, version, role (production: answered; challenger: in shadow) and class",
            ["model", "version", "role", "class_"],
            registry=r,
        )
        self.shadow_rows = Counter(
            "netsec_shadow_rows",
            "Logged rows the challenger scored in shadow, by outcome: scored, failed, disagreed "
            "(scored with another decision than Production's)",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.challenger_version = Gauge(
            "netsec_challenger_version",
            "Version number of the challenger scored in shadow (NaN: none loaded)",
            ["name"],
            registry=r,
        ).labels(model_name)
        self.challenger_version.set(float("nan"))
        self.model_info = Info("netsec_model", "The model being served", registry=r)
        self.model_details = Info(
            "netsec_model_details",
            "The served version's run and inference path (with a key only)",
            registry=self.details,
        )
        self.model_version = Gauge(
            "netsec_model_version", "Version number of the served model", ["name"], registry=r
        )
        self.model_threshold = Gauge(
            "netsec_model_threshold",
            "The served model's decision threshold on P(threat) (is_threat = P >= it)",
            ["name"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "netsec_model_loaded", "1 when a model is loaded (ready)", ["model"], registry=r
        ).labels(model_name)
        self.log_dropped = Counter(
            "netsec_prediction_log_dropped_rows",
            "Prediction-log rows dropped because the queue was full",
            ["model"],
            registry=r,
        ).labels(model_name)
        self.log_written = Counter(
            "netsec_prediction_log_written_rows",
            "Prediction-log rows written to the sink",
            ["model"],
            registry=r,
        ).labels(model_name)
        self.cross_site_refused = Counter(
            "netsec_cross_site_refused",
            "State-changing requests a browser sent from another origin, refused (403)",
            registry=r,
        )
        # The input contract at the scoring doors: rows refused (the request was answered
        # 422), flagged (returned unscored with status=invalid), scored with imputed cells.
        # Labelled by model like every series about its traffic; callers give the other labels.
        self.input_rows = ModelSeries(
            Counter(
                "netsec_input_rows",
                "Rows checked by the input contract, by model, outcome (refused, flagged, imputed) and route",
                ["model", "outcome", "route"],
                registry=r,
            ),
            model_name,
        )
        self.imputed_cells = ModelSeries(
            Counter(
                "netsec_imputed_cells",
                "Null feature cells sent to the model's imputer, by model and route",
                ["model", "route"],
                registry=r,
            ),
            model_name,
        )
        # Analysts' verdicts (POST /feedback), and the latest figures of the netsec_monitoring
        # DAG for the served version (its model version tags netsec.monitoring.*; NaN: none yet).
        self.feedback = Counter(
            "netsec_feedback_verdicts",
            "Verdicts received, by model and outcome: recorded, changed, unchanged",
            ["model", "outcome"],
            registry=r,
        )
        self.monitoring = {
            name: Gauge(f"netsec_monitoring_{name}", doc, ["model"], registry=r).labels(model_name)
            for name, doc in MONITORING_GAUGES.items()
        }

    def count_verdicts(self, outcome: str, n: int) -> None:
        self.feedback.labels(self.model, outcome).inc(n)

    def model_swapped(self, model) -> None:
        self.model_info.info({"name": model.name, "version": model.version, "model_class": model.model_class})
        self.model_details.info(
            {
                "name": model.name,
                "version": model.version,
                "run_id": model.run_id or "",
                "inference_path": model.inference_path,
            }
        )
        try:
            self.model_version.labels(model.name).set(float(model.version))
        except ValueError:
            pass
        threshold = getattr(model, "threshold", None)
        if threshold is not None:
            self.model_threshold.labels(model.name).set(threshold.value)
        self.model_loaded.set(1)

    def monitoring_figures(self, tags: dict[str, str] | None) -> None:
        """Set the monitoring gauges from a model version's tags (missing: NaN)."""
        import datetime as dt

        tags = tags or {}
        for name, gauge in self.monitoring.items():
            raw = tags.get("netsec.monitoring." + name, "")
            if name == "last_run_timestamp_seconds":
                raw = tags.get("netsec.monitoring.at", "")
                try:
                    value = dt.datetime.fromisoformat(raw).timestamp() if raw else float("nan")
                except ValueError:
                    value = float("nan")
            else:
                try:
                    value = float(raw) if raw != "" else float("nan")
                except ValueError:
                    value = float("nan")
            gauge.set(value)

    def count_predictions(
        self, n_threat: int, n_rows: int, *, version: str, role: str = "production"
    ) -> None:
        if n_threat:
            self.predictions.labels(self.model, version, role, "threat").inc(n_threat)
        if n_rows - n_threat:
            self.predictions.labels(self.model, version, role, "benign").inc(n_rows - n_threat)

    def count_shadow(self, version: str, outcome: str, n_rows: int) -> None:
        self.shadow_rows.labels(self.model, version, outcome).inc(n_rows)

    def challenger_swapped(self, model) -> None:
        """The challenger gauge follows the manager (None: no challenger)."""
        try:
            self.challenger_version.set(float(model.version) if model is not None else float("nan"))
        except ValueError:
            self.challenger_version.set(float("nan"))

    @staticmethod
    def rows_bucket(n: int) -> str:
        return "1" if n == 1 else "2-64" if n <= 64 else "65-1000" if n <= 1000 else ">1000"


class ObserveMiddleware:
    """Timing, counting and the Server-Timing header (the body-size cap is
    :mod:`serving.limits`, installed inside this one so a 413 is timed and counted too)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                dur_ms = (time.perf_counter() - start) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={dur_ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self._observe(scope, status["code"], start)

    def _observe(self, scope, code: int, start: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "<unmatched>"
        self.metrics.latency.labels(label).observe(time.perf_counter() - start)
        method = prom_label(scope.get("method", ""), allowed=HTTP_METHODS)  # a client's text
        self.metrics.requests.labels(label, method, str(code)).inc()
