"""How a failed run's error is put for its attempt (service.jobs.base): the type's name, the
traceback from the job's own frames, bounded; and an attempt as the API writes it."""

from __future__ import annotations

from service.jobs.base import error_name, format_traceback
from service.model import Attempt, AttemptOutcome


class OutOfDisk(OSError):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_builtin_type_is_named_alone_and_any_other_with_its_module() -> None:
    assert error_name(ValueError("x")) == "ValueError"
    assert error_name(OutOfDisk()) == f"{__name__}.OutOfDisk"


def test_a_traceback_is_python_s_own_text_when_it_fits() -> None:
    text = format_traceback(raised(OutOfDisk("full")), 10_000)
    assert text.startswith("Traceback (most recent call last):\n")
    assert "in raised" in text
    assert text.endswith(f"{__name__}.OutOfDisk: full\n")


def test_a_long_traceback_keeps_its_last_characters_and_says_how_many_went() -> None:
    whole = format_traceback(raised(ValueError("x" * 500)), 10_000)
    cut = format_traceback(raised(ValueError("x" * 500)), 100)
    head, rest = cut.split("\n", 1)
    assert head == f"…({len(whole) - 100} characters cut)…"
    assert rest == whole[-100:] and rest.endswith("x\n")


def test_an_error_whose_message_cannot_be_read_still_has_a_traceback() -> None:
    text = format_traceback(raised(Unprintable()), 10_000)
    assert "Unprintable" in text


def test_an_attempt_as_the_api_writes_it() -> None:
    running = Attempt(7, 1, "sidetask", "web-1:42", 1000)
    assert running.to_api() == {
        "attempt": 1,
        "server": "sidetask",
        "replica": "web-1:42",
        "start": 1000,
        "end": None,
        "outcome": "running",
        "checkpointed": False,
    }
    failed = Attempt(
        7, 2, "sidetask", "web-1:43", 2000, 2500, AttemptOutcome.FAILED, "OSError", "full", "T"
    )
    assert failed.to_api()["error"] == {"type": "OSError", "message": "full", "traceback": "T"}
    assert list(failed.to_api())[-1] == "checkpointed"
