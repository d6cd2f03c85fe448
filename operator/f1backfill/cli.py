"""One entry point: `f1backfill <command>`.

migrate   create or upgrade the database schema (idempotent, safe concurrently)
worker    drain one yacht's queue into pgvector (what a YachtBackfill Job runs)
operator  admit YachtBackfills in priority order, one Job at a time (kopf)
plan      print a YachtBackfill for every active yacht, for `kubectl apply -f -`
feedback  learn query terms from search clicks (`learn`), record a click (`record`)
dlq       list, retry or abandon dead letters

The demo and its data live in the development sandbox, not in this package:
`f1sandbox demo`, `f1sandbox seed` (operator/f1sandbox).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import WorkerSettings
from .constants import ANNOTATION_REPLAY_DEAD_LETTERS, Provider
from .errors import BackfillError
from .memory import configure_gc, limit_malloc_arenas

if TYPE_CHECKING:
    from .db.deadletters import DeadLetter


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from .db.migrate import migrate

    settings = WorkerSettings.from_env()
    applied = migrate(settings.database_url, dimensions=args.dimensions or settings.dimensions)
    print(f"schema up to date; applied {applied or 'nothing'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker.loop import Worker

    overrides = {
        "yacht_id": args.yacht_id, "batch_size": args.batch_size,
        "batch_sleep_sec": args.batch_sleep, "max_attempts": args.max_attempts,
        "max_embedding_chars": args.max_embedding_chars, "provider": args.provider,
        "max_in_flight": args.max_in_flight, "prometheus_port": args.port,
        "skip_object_types": tuple(args.skip_object_types.split(",")) if args.skip_object_types
        else None,
    }
    limit_malloc_arenas()
    settings = WorkerSettings.from_env(**overrides)
    if not settings.yacht_id:
        raise BackfillError("--yacht-id (or YACHT_ID) is required")
    _setup_logging(settings.log_level)
    worker = Worker(settings)

    def on_signal(signum, _frame) -> None:
        logging.getLogger(__name__).info("signal %d: releasing claims and stopping", signum)
        worker.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.run().exit_code


def cmd_operator(args: argparse.Namespace) -> int:
    import kopf

    from .config import OperatorSettings
    from .controller import handlers  # noqa: F401 - registers the kopf handlers
    from .controller.runtime import Runtime

    limit_malloc_arenas()
    configure_gc()
    settings = OperatorSettings.from_env()
    _setup_logging(settings.log_level)
    log = logging.getLogger("f1backfill.operator")
    log.info("operator starting with %s", settings.redacted())
    runtime = Runtime.create(settings)
    kopf.run(
        memo=kopf.Memo(runtime=runtime),
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=runtime.priority,
        identity=runtime.identity,
        liveness_endpoint=(f"http://0.0.0.0:{settings.health_port}/healthz"
                           if settings.health_port else None),
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan

    settings = WorkerSettings.from_env()
    sys.stdout.write(plan(settings.database_url, args.namespace))
    return 0


def cmd_feedback_learn(args: argparse.Namespace) -> int:
    from .config import FeedbackSettings
    from .feedback import learn, render

    settings = FeedbackSettings.from_env()
    _setup_logging(settings.log_level)
    result = learn(settings, yacht_id=args.yacht, dry_run=args.dry_run)
    print(render(result, dry_run=args.dry_run))
    return 0


def cmd_feedback_record(args: argparse.Namespace) -> int:
    from .config import FeedbackSettings
    from .db.connection import connect
    from .feedback import record_click

    settings = FeedbackSettings.from_env()
    conn = connect(settings.database_url, application_name="f1backfill-feedback")
    try:
        click = record_click(
            conn, org_id=args.org, yacht_id=args.yacht, user_id=args.user,
            query_text=args.query, object_type=args.object_type, object_id=args.object_id,
            position=args.position, max_query_chars=settings.max_query_chars)
    finally:
        conn.close()
    print(f"recorded click {click}")
    return 0


def _dlq_connection():
    from .db.connection import connect

    return connect(WorkerSettings.from_env().database_url, application_name="f1backfill-dlq")


def cmd_dlq(args: argparse.Namespace) -> int:
    from .db import deadletters

    conn = _dlq_connection()
    try:
        if args.dlq_command == "list":
            print(_dead_letter_table(deadletters.list_dead_letters(
                conn, yacht_id=args.yacht, code=args.code, include_resolved=args.all,
                limit=args.limit)))
            return 0
        operation = deadletters.retry if args.dlq_command == "retry" else deadletters.abandon
        counts = operation(conn, yacht_id=args.yacht, code=args.code, ids=args.id)
    finally:
        conn.close()
    verb = "re-queued" if args.dlq_command == "retry" else "abandoned"
    print(f"{verb} {sum(counts.values())} dead letters"
          + "".join(f"\n  yacht {y}: {n}" for y, n in sorted(counts.items())))
    if args.dlq_command == "retry" and counts:
        print("A Succeeded backfill in mode Once is not re-admitted for them: annotate it "
              f"instead (kubectl annotate yb NAME {ANNOTATION_REPLAY_DEAD_LETTERS}=$(date +%s))")
    return 0


def _dead_letter_table(letters: Sequence[DeadLetter]) -> str:
    """`dlq list`'s output: one line per dead letter, then the count."""
    lines = [f"{'id':<36}  {'yacht':<36}  {'object':<20}  {'code':<16}  {'tries':>5}  "
             f"{'last failure':<19}  {'resolved':<13}  error"]
    for d in letters:
        resolved = d.resolution_type or "-"
        lines.append(
            f"{d.id!s:<36}  {d.yacht_id!s:<36}  {d.object_type[:20]:<20}  "
            f"{(d.error_code or '-')[:16]:<16}  {d.attempts:>5}  "
            f"{d.last_failure_at:%Y-%m-%d %H:%M:%S}  {resolved:<13}  {d.error}")
    lines.append(f"\n{len(letters)} dead letters")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f1backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="create or upgrade the schema (DATABASE_URL)")
    migrate.add_argument("--dimensions", type=int, help="vector length (EMBEDDING_DIMENSIONS)")
    migrate.set_defaults(func=cmd_migrate)

    worker = sub.add_parser("worker", help="drain one yacht's queue (settings from env)")
    worker.add_argument("--yacht-id", help="the yacht (YACHT_ID)")
    worker.add_argument("--batch-size", type=int, help="rows per claim (BATCH_SIZE)")
    worker.add_argument("--batch-sleep", type=float, help="pause between batches (BATCH_SLEEP_SEC)")
    worker.add_argument("--max-attempts", type=int, help="failures before the DLQ (MAX_ATTEMPTS)")
    worker.add_argument("--max-embedding-chars", type=int, help="MAX_EMBEDDING_CHARS")
    worker.add_argument("--skip-object-types", help="comma-separated (SKIP_OBJECT_TYPES)")
    worker.add_argument("--provider", choices=[p.value for p in Provider],
                        help="EMBEDDING_PROVIDER")
    worker.add_argument("--max-in-flight", type=int, help="concurrent batches (MAX_IN_FLIGHT)")
    worker.add_argument("--port", type=int, help="/health and /metrics port (PROMETHEUS_PORT)")
    worker.set_defaults(func=cmd_worker)

    operator = sub.add_parser("operator", help="run the kopf operator (settings from env)")
    operator.set_defaults(func=cmd_operator)

    plan = sub.add_parser("plan", help="print a YachtBackfill per active yacht (kubectl apply)")
    plan.add_argument("--namespace", help="namespace written into each CR")
    plan.set_defaults(func=cmd_plan)

    feedback = sub.add_parser("feedback", help="click-feedback learning (nightly CronJob)")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    learn_cmd = feedback_sub.add_parser(
        "learn", help="append queries that led to clicks to the clicked rows' text")
    learn_cmd.add_argument("--dry-run", action="store_true", help="print, change nothing")
    learn_cmd.add_argument("--yacht", help="only this yacht (UUID)")
    learn_cmd.set_defaults(func=cmd_feedback_learn)
    record = feedback_sub.add_parser("record", help="record one search click")
    for flag in ("--org", "--yacht", "--user", "--query", "--object-type", "--object-id"):
        record.add_argument(flag, required=True)
    record.add_argument("--position", type=int, help="rank of the clicked result, 1 = top")
    record.set_defaults(func=cmd_feedback_record)

    dlq = sub.add_parser("dlq", help="list, retry or abandon dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (("list", "unresolved dead letters as a table"),
                       ("retry", "back to the queue with attempts reset"),
                       ("abandon", "resolve as abandoned")):
        command = dlq_sub.add_parser(name, help=text)
        command.add_argument("--yacht", help="only this yacht (UUID)")
        command.add_argument("--code", help="only this error code (e.g. invalid_input)")
        if name == "list":
            command.add_argument("--all", action="store_true", help="resolved ones too")
            command.add_argument("--limit", type=int, default=1000)
        else:
            command.add_argument("--id", action="append", help="only this entry (repeatable)")
        command.set_defaults(func=cmd_dlq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BackfillError as exc:
        print(f"f1backfill {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
