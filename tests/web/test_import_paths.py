"""A job module of your own project, outside the service's tree, served through the
import_paths setting (or PYTHONPATH) by a real `python -m service serve` started, as
scripts/serve starts it, from the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.conftest import TEST_CONFIG, ServerProcess, submit, wait_status

BASE = "/graphs/hugegraph"
#: a module name nothing else on the path has
MODULE = "sidetask_project_jobs_under_test"


def project(root: Path) -> Path:
    """A project directory holding a job module of its own and a configuration naming it."""
    root.mkdir()
    (root / f"{MODULE}.py").write_text(
        "def shout(ctx):\n    return ctx.input['text'].upper() + '!'\n"
    )
    return root


def config(path: Path, *lines: str) -> Path:
    """The test configuration with `lines` and the job type `shout` of the project."""
    settings = "".join(line + "\n" for line in lines)
    path.write_text(f'{TEST_CONFIG.read_text()}\n{settings}\n[jobs]\nshout = "{MODULE}:shout"\n')
    return path


async def shouted(server: ServerProcess) -> Any:
    await server.wait_ready()
    async with ClientSession(server.url) as client:
        task_id = await submit(client, BASE, "shout", {"text": "hello"})
        task = await wait_status(client, BASE, task_id, "success", "failed")
    return task["task_result"]


async def test_import_paths_relative_to_the_configuration_file(
    server_factory: Any, tmp_path: Path
) -> None:
    directory = project(tmp_path / "myproject")
    # "." is the directory of the file that says it, not the service's working directory
    server = server_factory(config_file=config(directory / "sidetask.toml", 'import_paths = ["."]'))
    assert await shouted(server) == '"HELLO!"'


async def test_the_serve_option_and_pythonpath_reach_the_module_too(
    server_factory: Any, tmp_path: Path
) -> None:
    directory = project(tmp_path / "myproject")
    settings = config(tmp_path / "plain.toml")
    by_option = server_factory(
        db=tmp_path / "a.db", config_file=settings, args=("--import-path", str(directory))
    )
    assert await shouted(by_option) == '"HELLO!"'
    by_env = server_factory(
        db=tmp_path / "b.db", config_file=settings, env={"PYTHONPATH": str(directory)}
    )
    assert await shouted(by_env) == '"HELLO!"'


async def test_without_the_setting_the_module_is_not_found_and_the_start_says_why(
    server_factory: Any, tmp_path: Path
) -> None:
    project(tmp_path / "myproject")
    server = server_factory(config_file=config(tmp_path / "plain.toml"))
    with pytest.raises(AssertionError) as failed:
        await server.wait_ready()
    assert f"cannot import {MODULE}" in str(failed.value)


async def test_a_directory_that_does_not_exist_is_refused_at_start(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(config_file=config(tmp_path / "typo.toml", 'import_paths = ["./nope"]'))
    with pytest.raises(AssertionError) as failed:
        await server.wait_ready()
    assert f"import_paths: '{tmp_path / 'nope'}' is not a directory" in str(failed.value)
