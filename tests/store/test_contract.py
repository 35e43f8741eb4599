"""The contract suite itself: every method of Store and LeaseStore is exercised here, and
every backend (conftest.BACKENDS) has the methods of both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.store import Backend, LeaseStore, Store
from tests.store.conftest import Raw

HERE = Path(__file__).parent


def protocol_methods(protocol: type) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if callable(value) and not name.startswith("_")
    }


@pytest.mark.parametrize("protocol", [Store, LeaseStore], ids=lambda p: p.__name__)
def test_every_method_of_the_contract_is_called_by_the_suite(protocol: type) -> None:
    sources = "\n".join(
        path.read_text() for path in HERE.glob("*.py") if path.name != Path(__file__).name
    )
    called = set(re.findall(r"\.(\w+)\(", sources))
    methods = protocol_methods(protocol)
    assert methods, protocol
    assert methods - called == set()


async def test_every_backend_is_a_store_and_a_lease_store(raw: Raw) -> None:
    store: Backend = raw.store
    for protocol in (Store, LeaseStore):
        for name in protocol_methods(protocol):
            assert callable(getattr(store, name)), (type(store).__name__, name)
