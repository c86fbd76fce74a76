"""Who may do what: the scoring key, the control-plane key, details for key holders, and the
refusal of cross-site browser writes.

Keys (``X-API-Key: <key>``, or ``Authorization: Bearer <key>`` for scrapers such as Prometheus):

- ``NETSEC_SERVING_API_KEY``, the scoring key: when set, ``/predict*`` and ``/feedback`` need it
  (or the control key); unset, they are open, as on the loopback default.
- ``NETSEC_SERVING_CONTROL_KEY``, the control plane: ``POST /train`` and any route that changes
  the registry need it, and only it (the scoring key gets a 403). Unset, those routes are off.
  It must differ from the scoring key: a client allowed to score is not thereby allowed to train.
- Details (run ids, the training data's digest, the inference path with its storage URIs, load
  errors): ``/model``, ``/metrics`` and ``/ready`` show them only to a request with a configured
  key; anonymous clients get what they need to call the service (the model's name, version,
  input contract and labels; counters and figures; ready or not).

Cross-site writes. A page on another site, opened in a browser on this machine, can send
"simple" POSTs (a multipart upload, ``no-cors``) to a service on loopback: CORS only hides the
answer, the request still lands. :func:`refuse_cross_site` (an app-wide dependency, so every
route is covered) refuses a state-changing request (any method but GET, HEAD, OPTIONS) that a
browser marks as coming from another origin: ``Sec-Fetch-Site`` other than ``same-origin`` or
``none`` (a user's own navigation), or, from a browser that does not send it, an ``Origin`` that
is not this service's. Origins listed in ``NETSEC_SERVING_CORS_ORIGINS`` are allowed. Clients
that are not browsers (curl, scripts, Airflow) send neither header and are not affected. This is
the Fetch Metadata check of OWASP's CSRF cheat sheet, as Go's ``net/http.CrossOriginProtection``
implements it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from serving.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of requests a page of this service made, or the user made directly.
SAME_ORIGIN = frozenset({"same-origin", "none"})

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="the scoring key (NETSEC_SERVING_API_KEY) on /predict* and /feedback when it is set; the "
    "control key (NETSEC_SERVING_CONTROL_KEY) on /train; either one shows /model's and /metrics' details",
)


def presented_key(request: Request, header: str | None) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    if header:
        return header
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _matches(key: str | None, expected) -> bool:
    return (
        key is not None
        and expected is not None
        and hmac.compare_digest(key.encode(), expected.get_secret_value().encode())
    )


def scopes(settings: Settings, key: str | None) -> frozenset[str]:
    """What ``key`` opens: ``score``, ``control``, ``details`` (a subset; empty for no key)."""
    out = set()
    if _matches(key, settings.control_key):
        out |= {"score", "control", "details"}
    if _matches(key, settings.api_key):
        out |= {"score", "details"}
    return frozenset(out)


def _settings(request: Request) -> Settings:
    return request.app.state.serving.settings


async def require_scoring_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """401 unless the scoring key (or the control key) is presented, when a scoring key is set."""
    settings = _settings(request)
    if settings.api_key is None:
        return
    if "score" not in scopes(settings, presented_key(request, key)):
        raise HTTPException(
            401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"}
        )


CONTROL_OFF = (
    "{path} is off: it changes what is trained or served, with this service's Airflow "
    "credentials, so it needs the control-plane key. To enable it, set NETSEC_SERVING_CONTROL_KEY "
    "on the serving service (a key other than NETSEC_SERVING_API_KEY) and send it in the "
    "X-API-Key header."
)


async def require_control_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """403 when no control key is configured (the route is off), 401 without a known key, 403
    for a key that does not open the control plane (the scoring key)."""
    settings = _settings(request)
    if settings.control_key is None:
        raise HTTPException(403, CONTROL_OFF.format(path=f"{request.method} {request.url.path}"))
    granted = scopes(settings, presented_key(request, key))
    if "control" in granted:
        return
    if not granted:  # no key, or one this service does not know
        raise HTTPException(
            401,
            "missing or wrong X-API-Key header (the control-plane key)",
            headers={"WWW-Authenticate": "X-API-Key"},
        )
    raise HTTPException(
        403,
        f"{request.method} {request.url.path} needs the control-plane key "
        "(NETSEC_SERVING_CONTROL_KEY); the scoring key does not open it",
    )


async def sees_details(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> bool:
    """True when the request presents a configured key: it may see run ids, digests, storage
    URIs and load errors."""
    return "details" in scopes(_settings(request), presented_key(request, key))


DetailsDep = Annotated[bool, Depends(sees_details)]


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def cross_site_reason(request: Request, allowed_origins: list[str]) -> str | None:
    """Why a state-changing request is refused as a cross-site browser request, or None."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() in {o.lower() for o in allowed_origins}:
        return None  # configured in NETSEC_SERVING_CORS_ORIGINS
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in SAME_ORIGIN:
            return None
        return f"a browser sent it from another origin ({origin or 'unknown'}; Sec-Fetch-Site: {site})"
    if origin is None:
        return None  # not a browser, or a browser's same-origin GET-like request
    if origin.lower() == _own_origin(request):
        return None
    return f"a browser sent it from another origin ({origin})"


async def refuse_cross_site(request: Request) -> None:
    """App-wide: 403 for a state-changing request a browser sent from another origin (see the
    module docstring), before any route reads its body or writes anything."""
    settings = _settings(request)
    why = cross_site_reason(request, settings.cors_origins)
    if why is not None:
        request.app.state.serving.metrics.cross_site_refused.inc()
        raise HTTPException(
            403,
            f"cross-site request refused: {why}; nothing was read or stored. A page of this "
            "service, or a client that is not a browser, may send it; to let a browser app on "
            "another origin call this service, list that origin in NETSEC_SERVING_CORS_ORIGINS",
        )
