"""``shapesearch serve | submit | jobs | result``: the job service and its command-line clients."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ArgumentError
from .output import path_arg, table

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("SHAPESEARCH_SERVER", DEFAULT_SERVER),
                   help="the service's URL (default $SHAPESEARCH_SERVER or %(default)s)")
    p.add_argument("--token", default=os.environ.get("SHAPESEARCH_TOKEN"),
                   help="the service's token, if it has one (default $SHAPESEARCH_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")


def add_parsers(sub) -> None:
    from .layers_command import _OPTIONS as LAYER_OPTIONS
    from .model_commands import compress_options
    from .search_commands import search_settings

    srv = sub.add_parser("serve", help="run the job service: HTTP API, web page and jobs on Ray")
    srv.add_argument("--data", type=path_arg, default=Path("shapesearch-service"),
                     help="directory for the job files and the default SQLite store (default %(default)s)")
    srv.add_argument("--db", default=None, help="SQLAlchemy URL of the job store (default: sqlite in --data), "
                                                "e.g. postgresql+psycopg://user@host/db")
    srv.add_argument("--address", default=None, help="run jobs on the Ray cluster at HOST:PORT (or RAY_ADDRESS)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    srv.add_argument("--token", default=os.environ.get("SHAPESEARCH_TOKEN"),
                     help="required of every request (needed off loopback; default $SHAPESEARCH_TOKEN)")
    srv.add_argument("--max-upload-mb", type=float, default=256, help="largest upload (default %(default)s MB)")
    srv.add_argument("--max-running", type=int, default=16, help="jobs running at once (default %(default)s)")
    srv.add_argument("--inputs", type=path_arg, default=None,
                     help="jobs may read server-side files under this directory (default: uploads only)")
    srv.add_argument("--json", action="store_true", help="(no output; accepted like every command)")
    srv.set_defaults(run=serve_command)

    sm = sub.add_parser("submit", help="submit a job to a running service; prints its id")
    kinds = sm.add_subparsers(dest="kind", required=True, help="the job: a command run by the service")
    for kind in ("image", "tensor"):
        k = kinds.add_parser(kind, help=f"a `shapesearch {kind}` search as a job")
        k.add_argument("path", type=path_arg, help="the input file, uploaded to the service")
        if kind == "tensor":
            k.add_argument("--key", default=None, help="tensor name inside a .safetensors file")
        search_settings(k)
    lay = kinds.add_parser("layers", help="a `shapesearch layers` plan as a job (--out is the job's)")
    for flag, options in LAYER_OPTIONS:
        if flag not in ("--out", "--overwrite", "--json", "--workers", "--address"):
            lay.add_argument(flag, **{**options, "default": None, "required": flag == "--model"})
    comp = kinds.add_parser("compress", help="a `shapesearch compress` run as a job")
    compress_options(comp, for_job=True)
    for k in kinds.choices.values():
        k.add_argument("--priority", type=int, default=None, help="higher starts first among pending jobs")
        k.add_argument("--cpus", type=int, default=None, help="at most this many evaluation tasks at once")
        _client_options(k)
        k.set_defaults(run=submit_command)

    jobs = sub.add_parser("jobs", help="list the service's jobs")
    jobs.add_argument("--state", default=None, help="only jobs in this state (PENDING, RUNNING, SUCCEEDED, …)")
    _client_options(jobs)
    jobs.set_defaults(run=jobs_command)

    res = sub.add_parser("result", help="a job's result (the result.json a CLI run writes)")
    res.add_argument("id", help="the job id `submit` printed")
    res.add_argument("--wait", action="store_true", help="wait until the job has ended")
    res.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    _client_options(res)
    res.set_defaults(run=result_command)


def serve_command(args: argparse.Namespace) -> tuple[dict, str]:
    from ..service.app import Settings, serve

    if not 1 <= args.port <= 65535:
        raise ArgumentError("port", f"must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_running < 1:
        raise ArgumentError("max_upload_mb", "and --max-running must be positive")
    settings = Settings(data=args.data, db=args.db, address=args.address, host=args.host, token=args.token,
                        max_upload=int(args.max_upload_mb * 2**20), max_running=args.max_running, inputs=args.inputs)
    serve(settings, args.port)
    return {}, ""


_NOT_PARAMS = {"command", "kind", "path", "server", "token", "json", "run"}


def submit_command(args: argparse.Namespace) -> tuple[dict, str]:
    from ..service.client import Client

    # `is`, not `in (None, False)`: 0 == False, and a 0 the user typed must reach the server's checks
    params = {k: v for k, v in vars(args).items() if k not in _NOT_PARAMS and v is not None}
    if params.pop("carry_over", None) is False:
        params["no_carry_over"] = True
    params = {k: v for k, v in params.items() if v is not False}  # flags left out, as on the command line
    for key in ("plan", "calib", "model"):  # the server reads absolute paths only (a built-in model name stays)
        if key in params and (key != "model" or Path(params[key]).exists()):
            params[key] = str(Path(params[key]).absolute())
    client = Client(args.server, args.token)
    job_id = client.submit(args.kind, getattr(args, "path", None), **params)
    return {"id": job_id}, job_id


def jobs_command(args: argparse.Namespace) -> tuple[dict, str]:
    from ..service.client import Client

    found = Client(args.server, args.token).jobs(args.state)
    rows = [(j["id"], f"{j['kind']:<8} {j['state']:<9} " + _progress(j)) for j in found] or [("", "no jobs")]
    return {"jobs": found}, table(rows)


def _progress(job: dict) -> str:
    p = job.get("progress") or {}
    if "best_cr" in p:
        return f"generation {p['generation']}/{p['generations']}, best CR {p['best_cr']:.2f}, {p['elapsed']:.0f} s"
    return job.get("error") or ""


def result_command(args: argparse.Namespace) -> tuple[dict, str]:
    import json

    from ..service.client import Client

    result = Client(args.server, args.token).result(args.id, wait=args.wait, timeout=args.timeout)
    return result, json.dumps(result, indent=2)
