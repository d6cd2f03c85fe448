"""One entry point for the sandbox: `f1sandbox <command>`.

demo       the whole product in a local sandbox: no cluster, no key, no external database
seed       load demo rows for the yachts of YachtBackfill manifests (kind, demos)
kubeapi    run the Kubernetes API emulator until SIGTERM or SIGINT
jobrunner  run Jobs of an API server as local processes (kubelet's part) until signalled

A server started as a process prints one JSON line once it serves (its URL, kubeconfig or
workdir, and pid), so whoever started it can read where it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _refuse(command: str, reason: str) -> int:
    """A command that cannot do what it was asked says why on stderr and exits 2."""
    print(f"f1sandbox {command}: error: {reason}", file=sys.stderr)
    return 2


def _serve_until_signalled(
    start: Callable[[], Any], announce: Callable[[], dict[str, Any]], stop: Callable[[], Any]
) -> int:
    """`start`, print what `announce` returns as one JSON line, wait for SIGTERM or SIGINT,
    then `stop`. The handlers come first: a signal during start-up still stops cleanly."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    start()
    try:
        print(json.dumps({**announce(), "pid": os.getpid()}), flush=True)
        while not stopping.wait(1.0):
            pass
    finally:
        stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from f1backfill.errors import ConfigError

    from .demo import run_demo

    try:
        return run_demo(timeout=args.timeout)
    except ConfigError as exc:  # e.g. no Redis to be had: one line, not a traceback
        print(f"f1sandbox demo: {exc}", file=sys.stderr)
        return 2


def cmd_seed(args: argparse.Namespace) -> int:
    from f1backfill.config import WorkerSettings
    from f1backfill.db.connection import connect
    from f1backfill.errors import BackfillError

    from .data import SAMPLES
    from .samples import load_backfill_manifests, seed_from_manifests

    docs = load_backfill_manifests(Path(args.samples) if args.samples else SAMPLES)
    if not docs:
        return _refuse("seed", f"no YachtBackfill manifests in {args.samples}")
    try:
        conn = connect(WorkerSettings.from_env().database_url, application_name="f1sandbox-seed")
    except BackfillError as exc:  # DATABASE_URL unset, or the database unreachable
        return _refuse("seed", str(exc))
    try:
        conn.autocommit = True
        seeded = seed_from_manifests(conn, docs)
    finally:
        conn.close()
    print(f"seeded {len(seeded)} of {len(docs)} yachts with demo rows")
    return 0


def cmd_kubeapi(args: argparse.Namespace) -> int:
    from .kubeapi import KubeAPI

    api = KubeAPI(
        host=args.host,
        port=args.port,
        history_limit=args.history_limit,
        strict_namespaces=not args.permissive_namespaces,
    )
    for path in args.crd:
        api.load_crd(path)

    def announce() -> dict[str, Any]:
        kubeconfig = None
        if args.kubeconfig:
            kubeconfig = str(api.write_kubeconfig(args.kubeconfig, namespace=args.namespace))
        return {"url": api.url, "kubeconfig": kubeconfig}

    return _serve_until_signalled(api.start, announce, api.stop)


def cmd_jobrunner(args: argparse.Namespace) -> int:
    from .jobrunner import JobRunner

    mapping = {}
    for item in args.map_command:
        source, _, target = item.partition("=")
        mapping[source] = shlex.split(target)

    def rewrite(command: list[str], env: dict[str, str], job: dict[str, Any]) -> list[str]:
        if command and command[0] in mapping:
            return [*mapping[command[0]], *command[1:]]
        return command

    runner = JobRunner(
        args.kubeconfig or args.url,
        args.workdir,
        env=dict(item.partition("=")[::2] for item in args.env),
        namespace=args.namespace,
        inherit_env=args.inherit_env,
        rewrite=rewrite if mapping else None,
        grace_period=args.grace_period,
    )
    return _serve_until_signalled(
        runner.start, lambda: {"server": runner.server, "workdir": str(runner.workdir)},
        runner.stop,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f1sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the whole product in a local sandbox (emulated API, embedded Postgres)")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after (seconds)")
    demo.set_defaults(func=cmd_demo)

    seed = sub.add_parser("seed", help="demo rows for the yachts of YachtBackfill manifests "
                                       "(DATABASE_URL)")
    seed.add_argument("--samples", help="folder of YachtBackfill YAML files (default: the "
                                        "samples packaged with the sandbox)")
    seed.set_defaults(func=cmd_seed)

    kubeapi = sub.add_parser("kubeapi", help="run the Kubernetes API emulator")
    kubeapi.add_argument("--host", default="127.0.0.1")
    kubeapi.add_argument("--port", type=int, default=0, help="0 picks a free port")
    kubeapi.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    kubeapi.add_argument("--namespace", default="default",
                         help="the kubeconfig context's namespace")
    kubeapi.add_argument("--crd", action="append", default=[],
                         help="a YAML file of CRDs to load at start (repeatable)")
    kubeapi.add_argument("--permissive-namespaces", action="store_true",
                         help="allow creating objects in namespaces that do not exist")
    kubeapi.add_argument("--history-limit", type=int, default=10_000,
                         help="watch events kept per resource for resuming watches")
    kubeapi.set_defaults(func=cmd_kubeapi)

    runner = sub.add_parser("jobrunner", help="run the Jobs of an API server as local processes")
    where = runner.add_mutually_exclusive_group(required=True)
    where.add_argument("--kubeconfig", help="kubeconfig of the API server")
    where.add_argument("--url", help="URL of the API server (no authentication)")
    runner.add_argument("--workdir", required=True, help="logs and working directory")
    runner.add_argument("--namespace", help="only Jobs in this namespace (default: all)")
    runner.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="base environment of every process (repeatable)")
    runner.add_argument("--inherit-env", action="store_true",
                        help="put the runner's own environment under the container env")
    runner.add_argument("--map-command", action="append", default=[], metavar="FROM=TO",
                        help="replace argv[0] FROM with the words of TO (repeatable)")
    runner.add_argument("--grace-period", type=float,
                        help="cap on terminationGracePeriodSeconds")
    runner.set_defaults(func=cmd_jobrunner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
