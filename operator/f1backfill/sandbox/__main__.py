"""Run the emulator as a process: ``python -m f1backfill.sandbox --port 0 --kubeconfig K``.

Prints one JSON line ({"url", "kubeconfig", "pid"}) once it serves, then serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from .server import KubeAPI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m f1backfill.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument(
        "--crd",
        action="append",
        default=[],
        help="a YAML file of CRDs to load at start (repeatable)",
    )
    parser.add_argument(
        "--permissive-namespaces",
        action="store_true",
        help="allow creating objects in namespaces that do not exist",
    )
    parser.add_argument(
        "--history-limit",
        type=int,
        default=10_000,
        help="watch events kept per resource for resuming watches",
    )
    args = parser.parse_args(argv)

    api = KubeAPI(
        host=args.host,
        port=args.port,
        history_limit=args.history_limit,
        strict_namespaces=not args.permissive_namespaces,
    )
    for path in args.crd:
        api.load_crd(path)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    api.start()
    try:
        kubeconfig = None
        if args.kubeconfig:
            kubeconfig = str(api.write_kubeconfig(args.kubeconfig, namespace=args.namespace))
        print(
            json.dumps({"url": api.url, "kubeconfig": kubeconfig, "pid": os.getpid()}), flush=True
        )
        while not stopping.wait(1.0):
            pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
