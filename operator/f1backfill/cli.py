"""One entry point: `f1backfill <command>`.

migrate   create or upgrade the database schema (idempotent, safe concurrently)
worker    drain one yacht's queue into pgvector (what a YachtBackfill Job runs)
operator  admit YachtBackfills in priority order, one Job at a time (kopf)
serve     the search API: search, click ingestion, the login pre-warm (FastAPI)
plan      print a YachtBackfill for every active yacht, for `kubectl apply -f -`
feedback  learn query terms from search clicks (`learn`), record a click (`record`)
dlq       list, retry or abandon dead letters

The demo and its data live in the development sandbox, not in this package:
`f1sandbox demo`, `f1sandbox seed` (operator/f1sandbox).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from .config import WorkerSettings
from .constants import ANNOTATION_REPLAY_DEAD_LETTERS, Provider
from .defaults import EMBEDDING_DIMENSIONS
from .errors import BackfillError, ConfigError, InvalidQuery
from .memory import configure_gc, limit_malloc_arenas

if TYPE_CHECKING:
    from .db.deadletters import DeadLetter


class _Formatter(logging.Formatter):
    """The package's own errors are written for people: a record that carries one (a lane
    that lost the database, a failed heartbeat) is one line, its message after the log's,
    as the reconciler logs them. Any other exception keeps its traceback: that is a bug."""

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BackfillError):
            record = logging.makeLogRecord({
                **record.__dict__, "exc_info": None, "exc_text": None, "args": None,
                "msg": f"{record.getMessage()} ({type(error).__name__}: {error})"})
        return super().format(record)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        handlers=[handler])
    # The Kubernetes client's connection pool warns once per retry of each request (three
    # per request); the caller's own line says the request failed and when it tries again.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _check_database_url(url: str) -> None:
    """A missing or malformed DATABASE_URL refused before a command logs or starts anything."""
    from .db.connection import check_url

    check_url(url)


def _database_work():
    """psycopg2's errors as the package's (`db.connection.translated_errors`): a database not
    migrated says to run `f1backfill migrate`, one that went away is DatabaseUnavailable."""
    from .db.connection import translated_errors

    return translated_errors()


def cmd_migrate(args: argparse.Namespace) -> int:
    from .db.migrate import migrate

    settings = WorkerSettings.from_env()
    with _database_work():
        applied = migrate(settings.database_url,
                          dimensions=args.dimensions or settings.dimensions)
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
        raise ConfigError("--yacht-id (or YACHT_ID) is required: the UUID of the yacht whose "
                          "queue to drain")
    _check_database_url(settings.database_url)
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
    # Without a database the operator could admit nothing: it reads each yacht's queue.
    _check_database_url(settings.database_url)
    _setup_logging(settings.log_level)
    # It loads the kubeconfig: before the first log line, so that a missing one is the only
    # line printed.
    runtime = Runtime.create(settings)
    log = logging.getLogger("f1backfill.operator")
    log.info("operator starting with %s", settings.redacted())
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


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import ServeSettings
    from .frontdoor.server import auth_settings, serve

    settings = ServeSettings.from_env()
    _check_database_url(settings.database_url)
    auth_settings(settings).validate()
    _setup_logging(settings.log_level)
    logging.getLogger("f1backfill.serve").info(
        "serving on %s:%d with %s", args.host, args.port, settings.redacted())
    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan

    settings = WorkerSettings.from_env()
    with _database_work():
        manifests = plan(settings.database_url, args.namespace)
    sys.stdout.write(manifests)
    return 0


def cmd_feedback_learn(args: argparse.Namespace) -> int:
    from .config import FeedbackSettings
    from .feedback import learn, render

    settings = FeedbackSettings.from_env()
    _setup_logging(settings.log_level)
    with _database_work():
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
        with _database_work():
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
        with _database_work():
            if args.dlq_command == "list":
                print(_dead_letter_table(deadletters.list_dead_letters(
                    conn, yacht_id=args.yacht, code=args.code, include_resolved=args.all,
                    limit=args.limit)))
                return 0
            operation = (deadletters.retry if args.dlq_command == "retry"
                         else deadletters.abandon)
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


# --- Arguments: each checked as it is parsed, before a setting is read or a database called

# search_click_events.click_position is an INTEGER column.
_INT4_MAX = 2**31 - 1
_YACHT = "the yacht's id (spec.yachtId of its YachtBackfill)"
_DEAD_LETTER = "a dead letter's id, the UUID in the first column of `f1backfill dlq list`"


def _uuid(meaning: str) -> Callable[[str], str]:
    """An argparse type: a UUID (`meaning` says whose), in its canonical lowercase form."""

    def parse(text: str) -> str:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a UUID: give {meaning}") from None

    return parse


def _whole_number(minimum: int, maximum: int | None = None, note: str = ""
                  ) -> Callable[[str], int]:
    """An argparse type: an int within [minimum, maximum]; `note` says what it counts."""
    limits = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(
                f"must be a whole number {limits}{note}, got {text!r}")
        return value

    return parse


def _namespace(text: str) -> str:
    """An argparse type: a namespace name; empty is no namespace, as without the flag."""
    from .plan import check_namespace

    if text:
        try:
            check_namespace(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _query(text: str) -> str:
    """An argparse type: a search query that `normalize_query` accepts, kept as typed (the
    click stores both forms)."""
    from .querytext import normalize_query

    try:
        normalize_query(text)
    except InvalidQuery as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _BadArguments(Exception):
    """What argparse would print with the usage and exit 2 for; `main` prints it alone."""


class _Parser(argparse.ArgumentParser):
    """argparse whose complaint is one line, like every other error of the CLI:
    `f1backfill dlq list: error: argument --yacht: ...` (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        raise _BadArguments(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="f1backfill", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{migrate,worker,operator,plan,feedback,dlq}")

    def command(subparsers, name: str, func: Callable[[argparse.Namespace], int], **kwargs):
        """A subcommand; `prog` (`f1backfill dlq list`) prefixes its error messages."""
        made = subparsers.add_parser(name, **kwargs)
        made.set_defaults(func=func, prog=made.prog)
        return made

    migrate = command(sub, "migrate", cmd_migrate,
                      help="create or upgrade the schema (DATABASE_URL)")
    migrate.add_argument(
        "--dimensions", help="vector length (EMBEDDING_DIMENSIONS)",
        type=_whole_number(EMBEDDING_DIMENSIONS.minimum, EMBEDDING_DIMENSIONS.maximum))

    worker = command(sub, "worker", cmd_worker,
                     help="drain one yacht's queue (settings from env)")
    worker.add_argument("--yacht-id", type=_uuid(_YACHT), help="the yacht (YACHT_ID)")
    worker.add_argument("--batch-size", type=int, help="rows per claim (BATCH_SIZE)")
    worker.add_argument("--batch-sleep", type=float, help="pause between batches (BATCH_SLEEP_SEC)")
    worker.add_argument("--max-attempts", type=int, help="failures before the DLQ (MAX_ATTEMPTS)")
    worker.add_argument("--max-embedding-chars", type=int, help="MAX_EMBEDDING_CHARS")
    worker.add_argument("--skip-object-types", help="comma-separated (SKIP_OBJECT_TYPES)")
    worker.add_argument("--provider", choices=[p.value for p in Provider],
                        help="EMBEDDING_PROVIDER")
    worker.add_argument("--max-in-flight", type=int, help="concurrent batches (MAX_IN_FLIGHT)")
    worker.add_argument("--port", type=int, help="/health and /metrics port (PROMETHEUS_PORT)")

    command(sub, "operator", cmd_operator, help="run the kopf operator (settings from env)")

    serve_cmd = command(sub, "serve", cmd_serve,
                        help="the search API: search, clicks, login pre-warm (settings from env)")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_cmd.add_argument("--port", type=_whole_number(1, 65535), default=8000,
                           help="port to listen on")

    plan = command(sub, "plan", cmd_plan,
                   help="print a YachtBackfill per active yacht (kubectl apply)")
    plan.add_argument("--namespace", type=_namespace, help="namespace written into each CR")

    feedback = sub.add_parser("feedback", help="click-feedback learning (nightly CronJob)")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True,
                                           metavar="{learn,record}")
    learn_cmd = command(feedback_sub, "learn", cmd_feedback_learn,
                        help="append queries that led to clicks to the clicked rows' text")
    learn_cmd.add_argument("--dry-run", action="store_true", help="print, change nothing")
    learn_cmd.add_argument("--yacht", type=_uuid(_YACHT), help="only this yacht (UUID)")
    record = command(feedback_sub, "record", cmd_feedback_record,
                     help="record one search click")
    for flag, kind, text in (
            ("--org", _uuid("the organisation's id"), "the organisation (UUID)"),
            ("--yacht", _uuid(_YACHT), "the yacht (UUID)"),
            ("--user", _uuid("the user's id"), "who clicked (UUID)"),
            ("--query", _query, "the search query, as typed"),
            ("--object-type", str, "the clicked row's object_type in search_index"),
            ("--object-id", _uuid("the clicked row's object_id in search_index"),
             "the clicked row's object_id in search_index (UUID)")):
        record.add_argument(flag, required=True, type=kind, help=text)
    record.add_argument("--position", type=_whole_number(1, _INT4_MAX, " (1 is the top result)"),
                        help="rank of the clicked result, 1 = top")

    dlq = sub.add_parser("dlq", help="list, retry or abandon dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True,
                                 metavar="{list,retry,abandon}")
    for name, text in (("list", "unresolved dead letters as a table"),
                       ("retry", "back to the queue with attempts reset"),
                       ("abandon", "resolve as abandoned")):
        letters = command(dlq_sub, name, cmd_dlq, help=text)
        letters.add_argument("--yacht", type=_uuid(_YACHT), help="only this yacht (UUID)")
        letters.add_argument("--code", help="only this error code (e.g. invalid_input)")
        if name == "list":
            letters.add_argument("--all", action="store_true", help="resolved ones too")
            letters.add_argument("--limit", type=_whole_number(0), default=1000,
                                 help="at most this many rows (default 1000)")
        else:
            letters.add_argument(
                "--id", action="append", type=_uuid(_DEAD_LETTER),
                help=f"only this entry: {_DEAD_LETTER} (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error it expects is one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
    except _BadArguments as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BackfillError as exc:
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return 2


def console() -> NoReturn:
    """The `f1backfill` program (and `python -m f1backfill`): `main`, then out at once.

    When a command returns, nothing of ours is left to run: connections are closed, lanes
    joined, logs written. The interpreter's own teardown (every module's objects freed one
    by one, the openai SDK's thousands of classes among them) took 0.3-0.7 s after a worker
    had finished, on the way between one Job and the next (docs/benchmarks.md); it is
    skipped, after flushing what is buffered.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, as `| head` does
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    console()
