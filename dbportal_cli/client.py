"""The REST client: one session, the token header, and API errors turned into exit codes."""

from __future__ import annotations

from typing import Any

import requests

# Exit codes (docs: README "Command line"): scripts and CI branch on them.
OK = 0
FAILURE = 1  # the portal or the network failed
USAGE = 2  # click's own code for a bad command line
NOT_SIGNED_IN = 3  # 401, or no URL / token configured
FORBIDDEN = 4  # 403
NOT_FOUND = 5  # 404
INVALID = 6  # 400: the message names the field
CONFLICT = 7  # 409 / 410
REQUEST_ENDED_BADLY = 10  # `wait`: the request ended rejected, cancelled or failed
TIMED_OUT = 11  # `wait --timeout` passed

_BY_STATUS = {400: INVALID, 401: NOT_SIGNED_IN, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT, 410: CONFLICT,
              415: INVALID, 429: FAILURE}


class ApiError(Exception):
    """An answer other than 2xx, with the portal's `detail` and per-field `errors`."""

    def __init__(self, status: int, detail: str, errors: dict[str, list[str]] | None = None) -> None:
        self.status = status
        self.detail = detail
        self.errors = errors or {}
        self.exit_code = _BY_STATUS.get(status, FAILURE)
        super().__init__(detail)

    def lines(self) -> list[str]:
        lines = [f"error ({self.status}): {self.detail}"]
        for field, messages in self.errors.items():
            for message in messages:
                line = f"  {field}: {message}"
                if line.strip() != f"{self.detail}".strip():
                    lines.append(line)
        return lines


class Client:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "dbportal-cli"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def _url(self, path: str) -> str:
        return f"{self.url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                stream: bool = False, timeout: float | None = None) -> requests.Response:
        try:
            response = self.session.request(method, self._url(path), params=params, json=json, stream=stream,
                                            timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach the portal at {self.url}: {exc.__class__.__name__}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")}).json()

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {}).json()


def _error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or response.reason or "error"
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
    return ApiError(response.status_code, str(detail), {str(k): [str(m) for m in (v if isinstance(v, list) else [v])]
                                                         for k, v in errors.items()})
