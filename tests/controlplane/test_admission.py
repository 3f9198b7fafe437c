"""Admission of costly calls (controlplane/admission.py): a bounded number at a time, a line in
arrival order, and a refusal with a retry hint, before any work, for a call that would wait
longer than the line allows."""

import asyncio

import pytest

from nodeplane.controlplane.admission import MAX_RETRY_AFTER, REFUSAL_MEMORY, Admission
from nodeplane.controlplane.errors import DomainError, ErrorCode


class Calls:
    """Calls through one Admission, each held open until released; records the order they
    entered in and how they ended."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.entered: list[str] = []
        self.released: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str) -> None:
        self.released[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._call(name))

    async def _call(self, name: str) -> None:
        async with self.admission.place():
            self.entered.append(name)
            await self.released[name].wait()

    def release(self, name: str) -> None:
        self.released[name].set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def refusal(task: asyncio.Task[None]) -> DomainError:
    error = task.exception()
    assert isinstance(error, DomainError), error
    return error


@pytest.mark.anyio
async def test_at_most_limit_calls_hold_a_place_and_the_rest_enter_in_arrival_order() -> None:
    calls = Calls(Admission(limit=2, max_wait=60.0))
    for name in "abcde":
        calls.start(name)
    await settle()
    assert calls.entered == ["a", "b"]
    assert (calls.admission.running, calls.admission.waiting) == (2, 3)
    calls.release("b")
    await settle()
    assert calls.entered == ["a", "b", "c"]
    calls.release("a")
    calls.release("c")
    await settle()
    assert calls.entered == ["a", "b", "c", "d", "e"]
    calls.release("d")
    calls.release("e")
    await asyncio.gather(*calls.tasks.values())
    assert (calls.admission.running, calls.admission.waiting) == (0, 0)


@pytest.mark.anyio
async def test_a_call_that_would_wait_longer_than_the_line_allows_is_refused_before_it_runs() -> (
    None
):
    now = [0.0]
    refused: list[int] = []
    admission = Admission(
        limit=2, max_wait=1.0, clock=lambda: now[0], on_refusal=lambda: refused.append(1)
    )
    calls = Calls(admission)
    # Two calls that held their place 0.5 s each teach it how long a call takes.
    for name in ("warm-1", "warm-2"):
        calls.start(name)
        await settle()
        now[0] += 0.5
        calls.release(name)
        await calls.tasks[name]
    # Two run, and the line may hold four: each pair ahead takes 0.5 s, and the fourth in line
    # would wait 2 * 0.5 = 1.0 s, which the line allows; the fifth, 1.25 s, which it does not.
    for name in ("r1", "r2", "w1", "w2", "w3", "w4", "late"):
        calls.start(name)
    await settle()
    assert calls.entered[2:] == ["r1", "r2"]
    assert admission.waiting == 4
    late = calls.tasks["late"]
    assert late.done()
    error = refusal(late)
    assert error.code is ErrorCode.UNAVAILABLE
    assert error.extensions() == {
        "code": "unavailable",
        "retryAfterSeconds": 2,  # 1.25 s, in whole seconds, rounded up
    }
    assert "late" not in calls.entered and refused == [1]
    for name in ("r1", "r2", "w1", "w2", "w3", "w4"):
        calls.release(name)
    await asyncio.gather(*(calls.tasks[n] for n in ("r1", "r2", "w1", "w2", "w3", "w4")))
    assert calls.entered[2:] == ["r1", "r2", "w1", "w2", "w3", "w4"]
    assert (admission.running, admission.waiting) == (0, 0)


@pytest.mark.anyio
async def test_the_retry_hint_grows_with_the_callers_refused_lately_and_forgets_them() -> None:
    """Hundreds refused at once, each told "in a second", would all come back at once and be
    refused again: the hint counts the callers refused lately, who come back too, as a line
    outside the server, and forgets them over REFUSAL_MEMORY seconds."""
    now = [0.0]
    admission = Admission(limit=2, max_wait=1.0, clock=lambda: now[0])
    calls = Calls(admission)
    calls.start("warm")
    await settle()
    now[0] += 0.5  # a call holds its place 0.5 s: two places take four calls a second
    calls.release("warm")
    await calls.tasks["warm"]
    for name in ("r1", "r2", "w1", "w2", "w3", "w4"):
        calls.start(name)
    await settle()
    hints = []
    for i in range(40):
        calls.start(f"late-{i}")
        await settle()
        hints.append(refusal(calls.tasks[f"late-{i}"]).details["retryAfterSeconds"])
    # The first is told when the line of four and itself have had their turns (1.25 s); the
    # fortieth when those and the 39 refused before it have (11 s).
    assert hints[0] == 2 and hints[-1] == 11, hints
    assert hints == sorted(hints)
    assert admission.retry_after() == 11
    now[0] += 3 * REFUSAL_MEMORY  # remembered at e**-3 of 40, about 2
    assert admission.retry_after() == 2
    for name in ("r1", "r2", "w1", "w2", "w3", "w4"):
        calls.release(name)
    await asyncio.gather(*(calls.tasks[n] for n in ("r1", "r2", "w1", "w2", "w3", "w4")))


@pytest.mark.anyio
async def test_the_retry_hint_is_at_most_max_retry_after() -> None:
    now = [0.0]
    admission = Admission(limit=1, max_wait=0.1, clock=lambda: now[0])
    calls = Calls(admission)
    calls.start("warm")
    await settle()
    now[0] += 5.0
    calls.release("warm")
    await calls.tasks["warm"]
    calls.start("holder")
    await settle()
    for i in range(3):
        calls.start(f"late-{i}")
        await settle()
    hints = [refusal(calls.tasks[f"late-{i}"]).details["retryAfterSeconds"] for i in range(3)]
    # Each would wait 5 s behind the holder, so is refused at once; each refused is one more
    # to come back.
    assert hints == [5, 10, 15]
    for i in range(20):
        calls.start(f"more-{i}")
        await settle()
    assert refusal(calls.tasks["more-19"]).details["retryAfterSeconds"] == MAX_RETRY_AFTER
    calls.release("holder")
    await calls.tasks["holder"]


@pytest.mark.anyio
async def test_a_call_whose_wait_runs_out_is_refused_and_its_turn_passes_to_the_next() -> None:
    refused: list[int] = []
    admission = Admission(limit=1, max_wait=0.05, on_refusal=lambda: refused.append(1))
    calls = Calls(admission)
    calls.start("holder")
    await settle()
    calls.start("patient")
    await settle()
    with pytest.raises(DomainError) as raised:
        await calls.tasks["patient"]
    assert raised.value.code is ErrorCode.UNAVAILABLE
    assert raised.value.details["retryAfterSeconds"] >= 1
    assert refused == [1] and admission.waiting == 0
    # The line is empty again: the next call waits for the holder alone, and enters.
    calls.start("next")
    await settle()
    calls.release("holder")
    await settle()
    assert calls.entered == ["holder", "next"]
    calls.release("next")
    await calls.tasks["next"]
    assert (admission.running, admission.waiting) == (0, 0)


@pytest.mark.anyio
async def test_a_waiting_call_cancelled_as_its_turn_comes_hands_the_place_on() -> None:
    """A turn handed over in the same moment the call was cancelled (its client went away)
    must not be lost: a place lost this way would be lost for the process's life."""
    admission = Admission(limit=1, max_wait=60.0)
    calls = Calls(admission)
    held = admission.place()
    await held.__aenter__()
    calls.start("cancelled")
    calls.start("next")
    await settle()
    # In one step: the place is handed to "cancelled", and "cancelled" is cancelled before it
    # runs again.
    await held.__aexit__(None, None, None)
    calls.tasks["cancelled"].cancel()
    await settle()
    assert calls.tasks["cancelled"].cancelled()
    assert calls.entered == ["next"]
    calls.release("next")
    await calls.tasks["next"]
    assert (admission.running, admission.waiting) == (0, 0)


@pytest.mark.anyio
async def test_a_waiting_call_cancelled_before_its_turn_leaves_the_line() -> None:
    admission = Admission(limit=1, max_wait=60.0)
    calls = Calls(admission)
    calls.start("holder")
    calls.start("gone")
    calls.start("next")
    await settle()
    calls.tasks["gone"].cancel()
    await settle()
    assert admission.waiting == 1
    calls.release("holder")
    await settle()
    assert calls.entered == ["holder", "next"]
    calls.release("next")
    await calls.tasks["next"]
    assert (admission.running, admission.waiting) == (0, 0)


@pytest.mark.anyio
async def test_a_call_that_fails_gives_its_place_back() -> None:
    admission = Admission(limit=1, max_wait=60.0)

    async def failing() -> None:
        async with admission.place():
            raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        await failing()
    assert admission.running == 0
    async with admission.place():
        assert admission.running == 1


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Admission(limit=0, max_wait=1.0)
