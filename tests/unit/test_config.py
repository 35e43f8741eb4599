"""Settings: the shipped file, a user's file, SIDETASK_* environment variables, and a
ConfigError naming the setting for every value that cannot be used."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import auth, config
from service.config import ConfigError, Settings
from service.schedules import parse_definition
from tests.conftest import ROOT, TEST_CONFIG

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
HINTS = typing.get_type_hints(Settings)

PASSWORD_HASH = auth.hash_password("secret", iterations=1)
TOKEN_HASH = auth.hash_token("a token")
#: an environment value and the setting it must produce, where the type alone does not say
SAMPLES: dict[str, tuple[str, Any]] = {
    "host": ("0.0.0.0", "0.0.0.0"),
    "db": ("/data/tasks.db", "/data/tasks.db"),
    "graphs": ("DEFAULT/hugegraph, gs1/g2", ("DEFAULT/hugegraph", "gs1/g2")),
    "type_concurrency": ('{"gremlin": 2, "sleep": 5}', {"gremlin": 2, "sleep": 5}),
    "type_rate_limits": (
        '{"gremlin": "10/s", "sleep": "5/min"}',
        {"gremlin": "10/s", "sleep": "5/min"},
    ),
    "jobs": ('{"mine": "tests.sup_jobs:gate"}', {"mine": "tests.sup_jobs:gate"}),
    "gremlin_url": ("http://127.0.0.1:8182/gremlin", "http://127.0.0.1:8182/gremlin"),
    "db_schema": ("tenant_a", "tenant_a"),
    "log_level": ("debug", "debug"),
    "server_name": ("replica-2", "replica-2"),
    "external_types": ("render, index", ("render", "index")),
    "commands": ("{}", {}),
    "import_paths": (f"{ROOT}/tests, {ROOT}/scripts", (str(ROOT / "tests"), str(ROOT / "scripts"))),
    "log_format": ("json", "json"),
    "users": (f'{{"admin": "{PASSWORD_HASH}"}}', {"admin": PASSWORD_HASH}),
    "tokens": (f'{{"ci": "{TOKEN_HASH}"}}', {"ci": TOKEN_HASH}),
    "grants": ('{"ci": ["DEFAULT/hugegraph"]}', {"ci": ("DEFAULT/hugegraph",)}),
    "metrics_public": ("true", True),
    "tracing": ("true", True),
    "hooks": (
        '[{"name": "ops", "url": "https://ops.example.org/hook", "secret": "k", "types": ["echo"]}]',
        (config.HookSpec("ops", "https://ops.example.org/hook", "k", types=("echo",)),),
    ),
    "callback_statuses": ("failed, running", ("failed", "running")),
    "schedules": (
        '{"tick": {"type": "echo", "every": 60}}',
        {"tick": config.ScheduleSpec(parse_definition({"type": "echo", "every": 60}))},
    ),
    "webhook_schemes": ("https", ("https",)),
    "webhook_allow": ("10.0.0.0/8, hooks.internal", ("10.0.0.0/8", "hooks.internal")),
    "allowed_hosts": (
        "my-app, sidetask.jobs.svc, *.svc.cluster.local",
        ("my-app", "sidetask.jobs.svc", "*.svc.cluster.local"),
    ),
    "allowed_origins": (
        "https://tools.example.org, http://127.0.0.1:3000",
        ("https://tools.example.org", "http://127.0.0.1:3000"),
    ),
}
#: what a sample needs beside it: a grant names a configured token
SAMPLE_CONTEXT: dict[str, dict[str, str]] = {
    "grants": {"SIDETASK_TOKENS": f'{{"ci": "{TOKEN_HASH}"}}'}
}


def load_env(**env: str) -> Settings:
    return config.load(env=env)


def sample(name: str) -> tuple[str, Any]:
    """A valid, non-default environment value for the setting `name`, and its parsed value."""
    if name in SAMPLES:
        return SAMPLES[name]
    hint = HINTS[name]
    default = FIELDS[name].default
    if hint is int:
        return str(default + 3), default + 3
    if hint is float:
        return str(default + 1.5), default + 1.5
    if hint is str:
        return "something-else", "something-else"
    if typing.get_origin(hint) is tuple:
        return "a, b", ("a", "b")
    raise AssertionError(f"no sample value for setting {name} of type {hint}: add one to SAMPLES")


# --- the shipped and test files ---


def test_the_shipped_file_states_the_defaults() -> None:
    """config/sidetask.toml and the Settings dataclass never disagree."""
    assert config.SHIPPED_CONFIG.exists()
    assert config.load(env={}) == Settings()


def test_the_test_file_loads() -> None:
    settings = config.load(TEST_CONFIG, env={})
    assert settings.default_max_retries == 0
    assert len(settings.graph_refs()) == 3


# --- the environment ---


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_setting_can_be_set_from_the_environment(name: str) -> None:
    text, expected = sample(name)
    settings = load_env(**SAMPLE_CONTEXT.get(name, {}), **{f"SIDETASK_{name.upper()}": text})
    value = getattr(settings, name)
    if isinstance(value, Mapping):
        value = dict(value)
    assert value == expected
    default = getattr(Settings(), name)
    if name != "commands":  # (its sample is the empty table: a command needs its own tests)
        assert value != (dict(default) if isinstance(default, Mapping) else default)


def test_later_sources_win(tmp_path: Path) -> None:
    file = tmp_path / "mine.toml"
    file.write_text("concurrency = 3\nport = 9000\ndrain_grace = 1.5\n")
    settings = config.load(
        file, env={"SIDETASK_PORT": "9100", "SIDETASK_DRAIN_GRACE": "2.5"}, drain_grace=4.0
    )
    assert (settings.concurrency, settings.port, settings.drain_grace) == (3, 9100, 4.0)


def test_import_paths_are_relative_to_the_file_that_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a file, relative to that file's directory; from the environment or the command
    line, relative to the working directory; either way stored absolute, and each must be
    a directory."""
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    file = project / "sidetask.toml"
    file.write_text('import_paths = [".", "jobs"]\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert config.load(file, env={}).import_paths == (str(project), str(project / "jobs"))
    monkeypatch.chdir(project)
    assert config.load(env={"SIDETASK_IMPORT_PATHS": "jobs"}).import_paths == (
        str(project / "jobs"),
    )
    assert config.load(env={}, import_paths=(".",)).import_paths == (str(project),)
    with pytest.raises(
        ConfigError, match=r"import_paths: '.*/project/nope' is not a directory \(from"
    ):
        config.load(env={}, import_paths=("nope",))


def test_the_process_environment_is_read_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIDETASK_CONCURRENCY", "5")
    assert config.load().concurrency == 5


# --- bad values ---


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("concurrency", "many"),
        ("concurrency", "1.5"),
        ("concurrency", "0"),
        ("concurrency", "-2"),
        ("port", "http"),
        ("port", "70000"),
        ("port", "-1"),
        ("default_max_retries", "-1"),
        ("retry_backoff", "soon"),
        ("retry_backoff", "-1"),
        ("retry_backoff", "nan"),
        ("retry_backoff_max", "inf"),
        ("progress_interval", "0"),
        ("drain_grace", "-0.5"),
        ("task_retention", "-1"),
        ("event_retention", "forever"),
        ("purge_interval", "0"),
        ("gremlin_timeout", "0"),
        ("type_concurrency", "gremlin=2"),
        ("type_concurrency", '["gremlin"]'),
        ("type_concurrency", '{"gremlin": "two"}'),
        ("type_concurrency", '{"gremlin": 0}'),
        ("jobs", '{"mine": "no-colon-here"}'),
        ("jobs", '{"mine": 5}'),
        ("graphs", "hugegraph"),
        ("graphs", "DEFAULT/a/b"),
        ("graphs", " , "),
        ("log_level", "LOUD"),
        ("gremlin_url", "localhost:8182"),
        ("allowed_hosts", "sidetask:8080"),
        ("allowed_hosts", "bad host"),
        ("allowed_hosts", "-dash.example"),
        ("allowed_hosts", "[not-v6]"),
        ("allowed_hosts", "*.10.0.0.1"),
        ("allowed_origins", "null"),
        ("allowed_origins", "tools.example.org"),
        ("allowed_origins", "ftp://tools.example.org"),
        ("allowed_origins", "https://tools.example.org/sidetask"),
        ("allowed_origins", "https://tools.example.org:99999"),
        ("allowed_origins", "https://user@tools.example.org"),
        ("db_schema", "Sidetask"),
        ("db_schema", "2fast"),
        ("db_schema", "a; DROP TABLE tasks"),
        ("db_schema", "x" * 64),
        ("heartbeat_interval", "0"),
        ("replica_timeout", "-1"),
    ],
)
def test_a_bad_environment_value_names_the_setting_and_the_variable(name: str, text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_env(**{f"SIDETASK_{name.upper()}": text})
    message = str(raised.value)
    assert name in message
    assert f"SIDETASK_{name.upper()}" in message


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("concurrency = true", "concurrency"),
        ("drain_grace = -3", "drain_grace"),
        ("graphs = 'DEFAULT'", "graphs"),
        ("graphs = [1, 2]", "graphs"),
        ("type_concurrency = 4", "type_concurrency"),
        ("type_concurrency = { gremlin = -1 }", "type_concurrency.gremlin"),
        ("host = 127", "host"),
    ],
)
def test_a_bad_file_value_names_the_setting_and_the_file(
    tmp_path: Path, line: str, name: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(line + "\n")
    with pytest.raises(ConfigError) as raised:
        config.load(file, env={})
    assert name in str(raised.value)
    assert str(file) in str(raised.value)


@pytest.mark.parametrize(
    "env",
    [
        {"SIDETASK_REPLICA_TIMEOUT": "5"},  # the heartbeat's default interval is 5 s
        {"SIDETASK_HEARTBEAT_INTERVAL": "40"},
    ],
)
def test_a_replica_timeout_not_longer_than_the_heartbeat_is_refused(env: dict[str, str]) -> None:
    """A live process would be declared dead between two of its heartbeats."""
    with pytest.raises(ConfigError, match=r"replica_timeout.*longer than.*heartbeat_interval"):
        load_env(**env)


def test_an_unknown_setting_in_a_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "typo.toml"
    file.write_text("concurency = 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*concurency"):
        config.load(file, env={})


def test_a_file_that_is_not_toml_or_is_missing_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text("concurrency = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        config.load(file, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml", env={})


def test_floats_are_finite_numbers() -> None:
    settings = load_env(SIDETASK_DRAIN_GRACE="0", SIDETASK_RETRY_BACKOFF="0.25")
    assert settings.drain_grace == 0.0 and math.isfinite(settings.retry_backoff)


def test_a_job_type_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    from service.jobs.registry import build_registry

    for spec, words in (
        ("tests.no_such_module:run", "cannot import"),
        ("tests.sup_jobs:no_such_function", "has no"),
    ):
        settings = config.load(env={}, db=str(tmp_path / "x.db"), jobs={"mine": spec})
        with pytest.raises(ConfigError, match=f"jobs.mine.*{words}"):
            build_registry(settings)


def test_the_command_line_reports_a_bad_setting_and_exits(tmp_path: Path) -> None:
    """A real `python -m service serve` with a bad variable: exit status 2, one clear line."""
    env = {**os.environ, "SIDETASK_CONCURRENCY": "lots", "SIDETASK_DB": str(tmp_path / "x.db")}
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert "SIDETASK_CONCURRENCY" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"tick": {"every": 60}}, "schedules.tick: 'type' (the job type it submits) is required"),
        ({"tick": {"type": "echo", "cron": "0 3 * *"}}, "is not a cron expression"),
        (
            {"tick": {"type": "echo", "every": 60, "paused": True}},
            "pause and resume it over the API",
        ),
        ({"a b": {"type": "echo", "every": 60}}, "a schedule's name is 1 to 128"),
        ({"tick": {"type": "echo", "every": 60, "graph": "x/y"}}, "schedules.tick.graph: 'x/y'"),
        ({"tick": "echo"}, "expected a table"),
    ],
)
def test_a_bad_declared_schedule_names_itself_and_what_is_wrong(
    value: dict[str, Any], message: str
) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(env={"SIDETASK_SCHEDULES": orjson.dumps(value).decode()})


def test_schedule_grace_and_lease_are_bounded() -> None:
    with pytest.raises(config.ConfigError, match="schedule_grace: must be at least 0"):
        load_env(SIDETASK_SCHEDULE_GRACE="-1")
    with pytest.raises(config.ConfigError, match="schedule_lease: must be more than 0"):
        load_env(SIDETASK_SCHEDULE_LEASE="0")
