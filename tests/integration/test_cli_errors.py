"""Every bad input to the installed `f1backfill` is one line on stderr and exit code 2: what
is wrong and how to fix it, never a traceback.

Each case runs the console script as a process with an environment of its own: no
kubeconfig, no PG* variables, a home directory of its own. The "not migrated" cases run
against a fresh database of the suite's PostgreSQL, the others against a migrated one.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from f1backfill.cli import main
from f1sandbox.fake_openai import FakeOpenAI
from tests.support.fleet import add_rows, add_yacht
from tests.support.waiting import wait_for

SCRIPT = Path(sys.executable).with_name("f1backfill")
YACHT = "0f8fad5b-d9cb-469f-a165-70867728950e"
PASSWORD = "s3cret-pw"  # in every URL below that has one; never in the output
URL_HINT = "postgresql://user:password@host:5432/dbname"
# Port 1 is privileged and nothing listens on it: the connection is refused at once.
UNREACHABLE = f"postgresql://f1:{PASSWORD}@127.0.0.1:1/nowhere"
# Which database a case runs against; any other value is the DATABASE_URL itself.
MIGRATED, UNMIGRATED, UNSET = "<migrated>", "<unmigrated>", "<unset>"
# A worker that gets as far as its queue logs its start at INFO first; these cases are
# about the error line, so they log warnings only.
QUIET = {"LOG_LEVEL": "WARNING"}
_names = itertools.count()


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    words: tuple[str, ...]  # each is in the error line
    database: str = MIGRATED
    env: Mapping[str, str] = field(default_factory=dict)


def record(**changed: str) -> tuple[str, ...]:
    """`feedback record` with valid arguments but those `changed` (--object-type: t)."""
    values = {"org": YACHT, "yacht": YACHT, "user": YACHT, "query": "oil filter",
              "object-type": "t", "object-id": YACHT, **changed}
    return ("feedback", "record", *itertools.chain.from_iterable(
        (f"--{name}", value) for name, value in values.items()))


def bad_url(url: str, *words: str) -> dict[str, Case]:
    """`url` as DATABASE_URL of every command that connects to the database."""
    commands = {"migrate": ("migrate",), "worker": ("worker", "--yacht-id", YACHT),
                "plan": ("plan",), "dlq-list": ("dlq", "list"),
                "feedback-learn": ("feedback", "learn"), "operator": ("operator",)}
    return {name: Case(argv, ("DATABASE_URL", *words, URL_HINT), url)
            for name, argv in commands.items()}


NOT_MIGRATED = ("does not exist", "run `f1backfill migrate`")
IS_NOT_A_UUID = "is not a UUID"

CASES: dict[str, Case] = {
    # A malformed DATABASE_URL is a setting to fix, named with what a valid one looks like.
    **{f"not-a-url-{name}": case for name, case in bad_url(
        "not-a-url", "not a valid PostgreSQL URL").items()},
    **{f"mysql-url-{name}": case for name, case in bad_url(
        f"mysql://u:{PASSWORD}@127.0.0.1:3306/db", "mysql://", "not a PostgreSQL one").items()},
    "bad-port": Case(("dlq", "abandon"), ("DATABASE_URL", "port 'notaport'", URL_HINT),
                     f"postgresql://u:{PASSWORD}@db:notaport/x"),
    "bad-query-parameter": Case(record(), ("DATABASE_URL", 'invalid URI query parameter: "x"'),
                                f"postgresql://u:{PASSWORD}@db/x?x=1"),
    "bad-percent-encoding": Case(("dlq", "retry"), ("DATABASE_URL", "%XX", URL_HINT),
                                 f"postgresql://u:{PASSWORD}%zz@db/x"),
    "no-database-url": Case(("migrate",), ("DATABASE_URL is not set", URL_HINT), UNSET),
    # A database that cannot be reached: named by host and port.
    "unreachable-migrate": Case(("migrate",), (
        "cannot connect to the database", '"127.0.0.1", port 1 failed'), UNREACHABLE),
    "unreachable-dlq-list": Case(("dlq", "list"), (
        "cannot connect to the database", '"127.0.0.1", port 1 failed'), UNREACHABLE),
    "unreachable-worker": Case(("worker", "--yacht-id", YACHT), (
        "cannot connect to the database", '"127.0.0.1", port 1 failed'), UNREACHABLE, QUIET),
    # A database never migrated: every command that reads or writes it says what to run.
    "unmigrated-dlq-list": Case(("dlq", "list"), ('"embedding_dlq"', *NOT_MIGRATED), UNMIGRATED),
    "unmigrated-dlq-retry": Case(("dlq", "retry"), ('"embedding_dlq"', *NOT_MIGRATED),
                                 UNMIGRATED),
    "unmigrated-dlq-abandon": Case(("dlq", "abandon"), ('"embedding_dlq"', *NOT_MIGRATED),
                                   UNMIGRATED),
    "unmigrated-feedback-learn-dry-run": Case(
        ("feedback", "learn", "--dry-run"), ('"search_click_events"', *NOT_MIGRATED),
        UNMIGRATED),
    "unmigrated-feedback-learn": Case(("feedback", "learn"),
                                      ('"search_click_events"', *NOT_MIGRATED), UNMIGRATED),
    "unmigrated-feedback-record": Case(record(), ('"search_click_events"', *NOT_MIGRATED),
                                       UNMIGRATED),
    "unmigrated-plan": Case(("plan",), ('"yachts"', *NOT_MIGRATED), UNMIGRATED),
    "unmigrated-worker": Case(("worker", "--yacht-id", YACHT),
                              ('"search_index"', *NOT_MIGRATED), UNMIGRATED, QUIET),
    # Arguments, checked before any database is called.
    "dlq-list-yacht": Case(("dlq", "list", "--yacht", "bad"),
                           ("--yacht", "'bad'", IS_NOT_A_UUID, "spec.yachtId")),
    "feedback-learn-yacht": Case(("feedback", "learn", "--yacht", "bad"),
                                 ("--yacht", "'bad'", IS_NOT_A_UUID, "spec.yachtId")),
    "dlq-retry-id": Case(("dlq", "retry", "--id", "notanint"),
                         ("--id", "'notanint'", IS_NOT_A_UUID, "`f1backfill dlq list`")),
    "dlq-abandon-id": Case(("dlq", "abandon", "--id", "999999"),
                           ("--id", "'999999'", IS_NOT_A_UUID, "`f1backfill dlq list`")),
    "dlq-list-limit": Case(("dlq", "list", "--limit", "-3"), ("--limit", "0 or more", "'-3'")),
    "record-org": Case(record(org="o"), ("--org", "'o'", IS_NOT_A_UUID)),
    "record-yacht": Case(record(yacht="y"), ("--yacht", "'y'", IS_NOT_A_UUID)),
    "record-user": Case(record(user="u"), ("--user", "'u'", IS_NOT_A_UUID)),
    "record-object-id": Case(record(**{"object-id": "x"}),
                             ("--object-id", "'x'", IS_NOT_A_UUID, "search_index")),
    "record-query-control": Case(record(query="oil\x01filter"), (
        "--query", "query text contains a control character (U+0001) at position 3")),
    "record-query-blank": Case(record(query="   "), ("--query", "query text is empty")),
    "record-position": Case((*record(), "--position", "0"),
                            ("--position", "from 1 to", "1 is the top result", "'0'")),
    "record-missing": Case(("feedback", "record", "--org", YACHT),
                           ("required", "--yacht", "--object-id")),
    "plan-namespace": Case(("plan", "--namespace", "Bad_NS!"),
                           ("--namespace", "'Bad_NS!'", "not a namespace name", "lowercase")),
    "migrate-dimensions": Case(("migrate", "--dimensions", "0"),
                               ("--dimensions", "from 1 to 4096", "'0'")),
    "no-command": Case((), ("required", "migrate", "dlq")),
    "dlq-no-command": Case(("dlq",), ("required", "{list,retry,abandon}")),
    # The worker's settings.
    "worker-no-yacht": Case(("worker",), ("--yacht-id", "YACHT_ID", "required")),
    "worker-yacht-id": Case(("worker", "--yacht-id", "not-a-uuid"),
                            ("--yacht-id", "'not-a-uuid'", IS_NOT_A_UUID)),
    "worker-yacht-id-env": Case(("worker",), ("YACHT_ID", "not a UUID", "'not-a-uuid'"),
                                env={"YACHT_ID": "not-a-uuid"}),
    "worker-openai-without-key": Case(("worker", "--yacht-id", YACHT), (
        "OPENAI_API_KEY is required with EMBEDDING_PROVIDER=openai",),
        env={"EMBEDDING_PROVIDER": "openai"}),
    "worker-batch-size-range": Case(("worker", "--yacht-id", YACHT),
                                    ("BATCH_SIZE=5000", "out of range [1, 2048]"),
                                    env={"BATCH_SIZE": "5000"}),
    "worker-batch-size-int": Case(("worker", "--yacht-id", YACHT),
                                  ("BATCH_SIZE='x'", "not a valid int"), env={"BATCH_SIZE": "x"}),
    # The operator: no kubeconfig in this environment; no database, no start.
    "operator-no-kubeconfig": Case(("operator",), ("no Kubernetes API", "KUBECONFIG"),
                                   UNREACHABLE),
    "operator-no-database-url": Case(("operator",), ("DATABASE_URL is not set", URL_HINT),
                                     UNSET),
    # serve: its settings are checked before it starts anything (a local Redis included).
    "serve-no-database-url": Case(("serve",), ("DATABASE_URL is not set", URL_HINT), UNSET),
    "serve-no-jwt-secret": Case(("serve",), ("JWT_SECRET is required with JWT_ALGORITHM=HS256",)),
    "serve-short-jwt-secret": Case(("serve",), ("JWT_SECRET must be at least 32 bytes",),
                                   env={"JWT_SECRET": PASSWORD}),
    "serve-alg-none": Case(("serve",), ("JWT_ALGORITHM must be one of",),
                           env={"JWT_ALGORITHM": "none", "JWT_SECRET": "x" * 32}),
    "serve-jwks-without-algorithm": Case(("serve",), ("JWT_JWKS_URL is set but",),
                                         env={"JWT_JWKS_URL": "https://idp.example/jwks"}),
    "serve-roles": Case(("serve",), ("SEARCH_ROLE_OBJECT_TYPES", "'captain'", "role=type"),
                        env={"JWT_SECRET": "x" * 32, "SEARCH_ROLE_OBJECT_TYPES": "captain"}),
    "serve-redis-url": Case(("serve",), ("REDIS_URL", "redis://"),
                            env={"JWT_SECRET": "x" * 32,
                                 "REDIS_URL": f"http://u:{PASSWORD}@cache:80"}),
    "serve-port": Case(("serve", "--port", "70000"), ("--port", "'70000'")),
    "serve-limits": Case(("serve",), ("SEARCH_DEFAULT_LIMIT", "SEARCH_MAX_LIMIT"),
                         env={"JWT_SECRET": "x" * 32, "SEARCH_DEFAULT_LIMIT": "50",
                              "SEARCH_MAX_LIMIT": "10"}),
}


@pytest.fixture
def environment(pg_server, tmp_path):
    """A function: the environment of a case, its database created on demand."""

    def make(case: Case) -> dict[str, str]:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.defpath, "HOME": str(home), "PROMETHEUS_PORT": "0", **case.env}
        if case.database == MIGRATED:
            env["DATABASE_URL"] = pg_server.create_database(
                f"cli{os.getpid()}_{next(_names)}", template="f1_template")
        elif case.database == UNMIGRATED:
            env["DATABASE_URL"] = pg_server.create_database(f"cli{os.getpid()}_{next(_names)}")
        elif case.database != UNSET:
            env["DATABASE_URL"] = case.database
        return env

    return make


def run(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *argv], env=env, capture_output=True, text=True,
                          timeout=60)


def command_of(argv: tuple[str, ...]) -> str:
    """`f1backfill dlq list` for ("dlq", "list", "--yacht", ...): how the error line starts."""
    words = list(itertools.takewhile(lambda a: not a.startswith("-"), argv))
    return " ".join(["f1backfill", *words])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_input_is_one_line_and_exit_code_2(case: Case, environment):
    result = run(case.argv, environment(case))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(f"{command_of(case.argv)}: error: "), line
    for word in case.words:
        assert word in line, f"{word!r} not in {line!r}"
    assert PASSWORD not in result.stderr + result.stdout
    assert result.stdout == ""


def test_a_worker_whose_database_goes_away_mid_run_says_so_in_one_line_each(
        db, database_url, tmp_path):
    """Each lane, the heartbeat and the command itself: one line each, no traceback."""
    yacht = add_yacht(db)
    add_rows(db, yacht.id, 100)
    with FakeOpenAI(latency=1.0) as fake:
        env = {"PATH": os.defpath, "HOME": str(tmp_path), "DATABASE_URL": database_url,
               "YACHT_ID": str(yacht.id), "EMBEDDING_PROVIDER": "openai",
               "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url,
               "PROMETHEUS_PORT": "0", "BATCH_SIZE": "20", "MAX_IN_FLIGHT": "2"}
        worker = subprocess.Popen([str(SCRIPT), "worker"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        wait_for(lambda: fake.stats().requests >= 2, timeout=20)  # both lanes mid-batch
        with db.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND application_name LIKE 'f1backfill-worker%%'")
        _, stderr = worker.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
    assert worker.returncode == 2, stderr
    lines = stderr.splitlines()
    # Why the connection ended, not the "connection already closed" of what followed.
    assert re.fullmatch(r"f1backfill worker: error: database: .+", lines[-1]), stderr
    assert "already closed" not in lines[-1]
    lanes = [line for line in lines if " lane " in line]
    assert lanes and all("failed (DatabaseUnavailable: database: " in line for line in lanes)


def test_a_limit_past_the_bigint_range_lists_everything(db, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["dlq", "list", "--limit", str(2**70)]) == 0
    assert "0 dead letters" in capsys.readouterr().out


def test_a_valid_yacht_is_given_to_the_database_in_its_canonical_form(
        db, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["dlq", "list", "--yacht", "{" + str(uuid.uuid4()).upper() + "}"]) == 0
    assert "0 dead letters" in capsys.readouterr().out
