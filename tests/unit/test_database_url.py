"""`check_url`: a DATABASE_URL libpq cannot read is a ConfigError that names the variable,
says what a valid one looks like and never shows the password; a valid one passes."""

from __future__ import annotations

import pytest

from f1backfill.db.connection import URL_EXAMPLE, check_url
from f1backfill.errors import ConfigError

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize("url, says", [
    ("", "DATABASE_URL is not set"),
    ("not-a-url", "not a valid PostgreSQL URL"),
    (f"mysql://u:{PASSWORD}@127.0.0.1:3306/db", "a mysql:// URL, not a PostgreSQL one"),
    (f"http://u:{PASSWORD}@db/x", "a http:// URL"),
    (f" postgresql://u:{PASSWORD}@db/x", "not a valid PostgreSQL URL"),
    (f"postgresql://u:{PASSWORD}@db:notaport/x", "port 'notaport'"),
    (f"postgresql://u:{PASSWORD}@db:99999/x", "port '99999'"),
    (f"postgresql://u:{PASSWORD}@db:5432,other:0/x", "port '0'"),
    (f"postgresql://u:{PASSWORD}@db/x?nonsense=1", 'invalid URI query parameter: "nonsense"'),
    (f"postgresql://u:{PASSWORD}@[::1/x", 'matching "]"'),
    (f"postgresql://u:{PASSWORD}%zz@db/x", "write a special character as %XX"),
    (f"postgresql://u:{PASSWORD}@x@db/x?nonsense=1", '"nonsense"'),  # `@` in the password
    (f"host=db password={PASSWORD} dbname", "not a valid PostgreSQL URL"),
    (f"host=db password='{PASSWORD}", "not a valid PostgreSQL URL"),
], ids=lambda value: value if len(value) < 30 else None)
def test_a_malformed_url_is_a_config_error_without_its_password(url, says):
    with pytest.raises(ConfigError) as raised:
        check_url(url)
    message = str(raised.value)
    assert message.startswith("DATABASE_URL ")
    assert says in message
    assert message.endswith(f"expected {URL_EXAMPLE}")
    assert PASSWORD not in message
    assert "\n" not in message


@pytest.mark.parametrize("url", [
    f"postgresql://u:{PASSWORD}@db:5432/x",
    "postgres://db/x",
    "postgresql:///x",  # the local socket
    "postgresql://db1:5432,db2:5433/x?target_session_attrs=read-write",
    f"postgresql://u:{PASSWORD}@db/x?sslmode=require&connect_timeout=5",
    f"host=db port=5432 dbname=x user=u password={PASSWORD}",
])
def test_a_valid_url_passes(url):
    check_url(url)
