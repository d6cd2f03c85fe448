"""Worker settings: the established env names, flags win, errors name the variable."""

import pytest

from f1backfill.config import OperatorSettings, ServeSettings, WorkerSettings
from f1backfill.defaults import JWT_LEEWAY_SECONDS
from f1backfill.errors import ConfigError

YACHT = "0b8f5d1e-8f0e-4c1a-9c53-2f1d8a6b9e10"


def test_reads_the_established_names_from_the_environment():
    settings = WorkerSettings.from_env(
        {
            "YACHT_ID": YACHT,
            "BATCH_SIZE": "50",
            "BATCH_SLEEP_SEC": "0.5",
            "CIRCUIT_BREAKER_THRESHOLD": "7",
            "CIRCUIT_BREAKER_RESET_SEC": "30",
            "MAX_EMBEDDING_CHARS": "1000",
            "SKIP_OBJECT_TYPES": "email, document",
            "PROMETHEUS_PORT": "9100",
            "LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.batch_size == 50
    assert settings.batch_sleep_sec == 0.5
    assert settings.circuit_breaker_threshold == 7
    assert settings.circuit_breaker_reset_sec == 30.0
    assert settings.max_embedding_chars == 1000
    assert settings.skip_object_types == ("email", "document")
    assert settings.prometheus_port == 9100


def test_flags_override_the_environment():
    settings = WorkerSettings.from_env({"BATCH_SIZE": "50"}, batch_size=20, max_attempts=None)
    assert settings.batch_size == 20
    assert settings.max_attempts == 5


@pytest.mark.parametrize(
    "env, named",
    [
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
        ({"BATCH_SIZE": "lots"}, "BATCH_SIZE"),
        ({"YACHT_ID": "not-a-uuid"}, "YACHT_ID"),
        ({"EMBEDDING_PROVIDER": "cohere"}, "EMBEDDING_PROVIDER"),
        ({"EMBEDDING_PROVIDER": "openai"}, "OPENAI_API_KEY"),
        ({"MAX_ATTEMPTS": "101"}, "MAX_ATTEMPTS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        WorkerSettings.from_env(env)


def test_redacted_hides_secrets():
    settings = WorkerSettings.from_env(
        {
            "DATABASE_URL": "postgresql://u:hunter2@db/x",
            "OPENAI_API_KEY": "sk-secret",
            "EMBEDDING_PROVIDER": "openai",
        }
    )
    shown = repr(settings.redacted())
    assert "hunter2" not in shown and "sk-secret" not in shown
    assert settings.redacted()["database_url"] == "<set>"


@pytest.mark.parametrize("cls", ["WorkerSettings", "OperatorSettings"])
def test_redis_url_is_a_secret_redis_url_and_optional(cls):
    import f1backfill.config as config

    settings_cls = getattr(config, cls)
    assert settings_cls.from_env({}).redis_url == ""  # no Redis: nothing is bumped
    for url in ("redis://:hunter2@cache:6379/0", "rediss://cache:6380/1",
                "unix:///run/redis/redis.sock?db=0"):
        settings = settings_cls.from_env({"REDIS_URL": url})
        assert settings.redis_url == url
        assert settings.redacted()["redis_url"] == "<set>"
    # Refused at start, named, and not echoed: the value may hold a password.
    with pytest.raises(ConfigError, match="REDIS_URL") as refused:
        settings_cls.from_env({"REDIS_URL": "http://:hunter2@cache:6379"})
    assert "hunter2" not in str(refused.value)


def test_operator_settings_read_their_environment_and_check_it():
    from f1backfill.config import OperatorSettings

    settings = OperatorSettings.from_env({
        "WATCH_NAMESPACES": "fleet-a,fleet-b", "MAX_CONCURRENT_JOBS": "3", "STANDALONE": "yes",
        "WORKER_COMMAND": "/opt/venv/bin/f1backfill,worker"})
    assert settings.namespaces == ("fleet-a", "fleet-b")
    assert settings.max_concurrent_jobs == 3
    assert settings.standalone is True
    assert settings.worker_command == ("/opt/venv/bin/f1backfill", "worker")
    for env, named in (({"STANDALONE": "perhaps"}, "STANDALONE"),
                       ({"MAX_CONCURRENT_JOBS": "0"}, "MAX_CONCURRENT_JOBS"),
                       ({"DLQ_WARNING_THRESHOLD": "5000"}, "DLQ_CRITICAL_THRESHOLD"),
                       ({"DEFAULT_EMBEDDING_PROVIDER": "cohere"}, "DEFAULT_EMBEDDING_PROVIDER")):
        with pytest.raises(ConfigError, match=named):
            OperatorSettings.from_env(env)


def test_feedback_settings_have_the_documented_thresholds_by_default():
    from f1backfill.config import FeedbackSettings

    settings = FeedbackSettings.from_env({})
    assert (settings.window_days, settings.min_clicks, settings.max_avg_position,
            settings.max_search_text) == (30, 3, 5.0, 12000)
    with pytest.raises(ConfigError, match="FEEDBACK_MIN_CLICKS"):
        FeedbackSettings.from_env({"FEEDBACK_MIN_CLICKS": "0"})


def test_the_vector_length_has_one_bound_for_a_cr_a_worker_and_the_migration():
    from f1backfill.db.migrate import migrate
    from f1backfill.defaults import EMBEDDING_DIMENSIONS
    from f1backfill.errors import MigrationError

    top = EMBEDDING_DIMENSIONS.maximum
    assert WorkerSettings.from_env({"EMBEDDING_DIMENSIONS": str(top)}).dimensions == top
    with pytest.raises(ConfigError, match="EMBEDDING_DIMENSIONS"):
        WorkerSettings.from_env({"EMBEDDING_DIMENSIONS": str(top + 1)})
    with pytest.raises(MigrationError, match=f"within 1..{top}"):
        migrate("postgresql://nowhere.invalid/none", dimensions=top + 1)  # before connecting


@pytest.mark.parametrize("cls", [WorkerSettings, OperatorSettings])
def test_the_edge_kv_settings_are_all_or_none_and_the_token_a_secret(cls):
    ids = {"CLOUDFLARE_ACCOUNT_ID": "0123456789abcdef0123456789abcdef",
           "CLOUDFLARE_KV_NAMESPACE_ID": "fedcba9876543210fedcba9876543210"}
    full = {**ids, "CLOUDFLARE_API_TOKEN": "cf-s3cret", "REDIS_URL": "redis://cache:6379/0"}
    settings = cls.from_env(full)
    assert settings.cloudflare_api_base_url == "https://api.cloudflare.com/client/v4"
    assert settings.redacted()["cloudflare_api_token"] == "<set>"
    assert "cf-s3cret" not in repr(settings)
    assert cls.from_env({}).cloudflare_account_id == ""  # none: nothing is published
    with pytest.raises(ConfigError, match="CLOUDFLARE_API_TOKEN missing"):
        cls.from_env(ids)
    with pytest.raises(ConfigError, match="CLOUDFLARE_ACCOUNT_ID is not a Cloudflare id"):
        cls.from_env({**full, "CLOUDFLARE_ACCOUNT_ID": "../../accounts/other"})
    with pytest.raises(ConfigError, match="CLOUDFLARE_API_BASE_URL"):
        cls.from_env({**full, "CLOUDFLARE_API_BASE_URL": "file:///etc/passwd"})
    # The generation the edge is sent is Redis's: no Redis, nothing to publish.
    with pytest.raises(ConfigError, match="set REDIS_URL too"):
        cls.from_env({key: value for key, value in full.items() if key != "REDIS_URL"})


def test_the_token_leeway_has_one_range_and_a_bad_one_is_refused_by_its_own_name():
    # serve reads JWT_LEEWAY_SEC; its verifier takes the same range (defaults.py), so a
    # value out of it is refused naming the variable the user set, not the verifier's.
    assert ServeSettings.from_env({}).jwt_leeway_sec == JWT_LEEWAY_SECONDS.default
    ServeSettings.from_env({"JWT_LEEWAY_SEC": str(JWT_LEEWAY_SECONDS.maximum)})
    with pytest.raises(ConfigError, match="JWT_LEEWAY_SEC="):
        ServeSettings.from_env({"JWT_LEEWAY_SEC": str(JWT_LEEWAY_SECONDS.maximum + 1)})
