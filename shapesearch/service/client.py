"""A small Python client of the job service (what ``shapesearch submit / jobs / result`` use).

    from shapesearch import Client
    c = Client("http://127.0.0.1:8000")
    job = c.submit("image", "photo.png", eps=0.05)
    result = c.result(job, wait=True)          # the run's result.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ArgumentError, ShapesearchError

FINISHED = ("STOPPED", "SUCCEEDED", "FAILED")


def _quoted(part: str) -> str:
    """One path segment as sent: an id with ?, # or / stays that id (and an empty one no route)."""
    from urllib.parse import quote

    return quote(str(part), safe="") or "-"


class Client:
    """Talks to ``shapesearch serve`` at ``server`` (with its ``token`` if it has one)."""

    def __init__(self, server: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        try:
            self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise ArgumentError("server", f"{server!r} is not a server URL ({exc}); give e.g. "
                                          "http://127.0.0.1:8000") from None

    def _call(self, method: str, path: str, **kw) -> object:
        import httpx

        try:
            r = self.http.request(method, path, **kw)
        except httpx.InvalidURL as exc:
            raise ArgumentError("server", f"{self.server!r} is not a server URL ({exc}); give e.g. "
                                          "http://127.0.0.1:8000") from None
        except httpx.HTTPError as exc:
            raise ShapesearchError(f"no shapesearch server answers at {self.server} ({exc}); start one with "
                                   "`shapesearch serve` or give its address") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ShapesearchError(f"{detail}" if r.status_code == 422 else f"server: {r.status_code} {detail}")
        return r.json() if "json" in r.headers.get("content-type", "") else r.content

    def submit(self, kind: str, path: str | Path | None = None, **params) -> str:
        """Submit a ``kind`` job (image, tensor, layers, compress) with its command's options;
        ``path``: a local input file, uploaded. Returns the job id."""
        params = {k: v for k, v in params.items() if v is not None}
        if path is None:
            return self._call("POST", f"/api/jobs/{kind}", json=params)["id"]
        path = Path(path)
        if not path.is_file():
            raise ShapesearchError(f"{path} not found; give an existing file to upload")
        with path.open("rb") as f:
            return self._call("POST", f"/api/jobs/{kind}", data={"params": json.dumps(params)},
                              files={"file": (path.name, f)})["id"]

    def jobs(self, state: str | None = None) -> list[dict]:
        return self._call("GET", "/api/jobs", params={"state": state} if state else None)

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{_quoted(job_id)}")

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> dict:
        """The job once it has ended (or ShapesearchError after ``timeout`` seconds)."""
        if timeout is not None and not 0 <= timeout < float("inf"):  # NaN fails too
            raise ArgumentError("timeout", f"must be a number of seconds >= 0, got {timeout}")
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["state"] in FINISHED:
                return job
            if end is not None and time.monotonic() > end:
                raise ShapesearchError(f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(poll)

    def result(self, job_id: str, wait: bool = False, timeout: float | None = None) -> dict:
        """The finished job's result (an image/tensor job's result.json, a plan, a report)."""
        if wait:
            self.wait(job_id, timeout)
        return self._call("GET", f"/api/jobs/{_quoted(job_id)}/result")

    def artifact(self, job_id: str, name: str) -> bytes:
        return self._call("GET", f"/api/jobs/{_quoted(job_id)}/artifacts/{_quoted(name)}")

    def logs(self, job_id: str) -> str:
        return self._call("GET", f"/api/jobs/{_quoted(job_id)}/logs").decode()

    def stop(self, job_id: str) -> dict:
        return self._call("POST", f"/api/jobs/{_quoted(job_id)}/stop")

    def delete(self, job_id: str) -> dict:
        return self._call("DELETE", f"/api/jobs/{_quoted(job_id)}")

    def close(self) -> None:
        self.http.close()
