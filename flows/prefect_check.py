"""The Prefect server a command talks to answers, and accepts this client: ``PREFECT_API_URL`` reachable, and
``PREFECT_API_AUTH_STRING`` (a server with basic auth) or ``PREFECT_API_KEY`` (Prefect Cloud) accepted. One GET of
``/hello`` (which a guarded server refuses without auth) with a short timeout, with the headers Prefect's own client
sends, read from Prefect's settings (env vars or the active profile)."""

from __future__ import annotations

import base64

import httpx

from ito_core.preflight.finding import Finding, failed, ok, skipped

CHECK = "prefect"
TIMEOUT_S = 5.0


def auth_headers(auth_string: str | None, api_key: str | None) -> dict[str, str]:
    """What ``prefect.client.orchestration.PrefectClient`` sends: basic auth first, else the Cloud API key."""
    if auth_string:
        return {"Authorization": f"Basic {base64.b64encode(auth_string.encode()).decode()}"}
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def check_prefect_server(*, needed: bool) -> Finding:
    """``needed``: the command cannot work without a server (``serve``); else no ``PREFECT_API_URL`` means Prefect's
    temporary local server, and the check is skipped."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        if needed:
            return failed(CHECK, "PREFECT_API_URL is not set; set it to your Prefect server's API, e.g. export "
                                 "PREFECT_API_URL=http://HOST:4200/api (and PREFECT_API_AUTH_STRING=user:password "
                                 "if the server has basic auth)")
        return skipped(CHECK, "no PREFECT_API_URL: the run uses a temporary local Prefect server")
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    key = api.key.get_secret_value() if api.key else None
    try:
        answer = httpx.get(f"{api.url.rstrip('/')}/hello", headers=auth_headers(auth, key), timeout=TIMEOUT_S)
    except httpx.HTTPError as err:
        return failed(CHECK, f"PREFECT_API_URL={api.url}: the Prefect server does not answer ({type(err).__name__}: "
                             f"{err}); start it (prefect server start) or fix PREFECT_API_URL")
    if answer.status_code in (401, 403):
        if key and not auth:
            fix = "PREFECT_API_KEY was refused; set a valid Prefect Cloud API key"
        else:
            fix = (f"PREFECT_API_AUTH_STRING {'was refused' if auth else 'is not set'}; set it to the server's "
                   "user:password (its PREFECT_SERVER_API_AUTH_STRING)")
        return failed(CHECK, f"PREFECT_API_URL={api.url} answered {answer.status_code}: {fix}")
    if answer.status_code != 200:
        return failed(CHECK, f"PREFECT_API_URL={api.url} answered HTTP {answer.status_code} to GET /hello; is it a "
                             "Prefect server's API URL (ending in /api)?")
    return ok(CHECK, f"{api.url} answers{' and accepts this client' if auth or key else ''}")
