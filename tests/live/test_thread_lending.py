"""ThreadLender on a fake pool, and the session lending while its worker has snapshots pending."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_callbacks.live.config import SpectralConfig
from spectral_callbacks.live.session import SpectralSession
from spectral_callbacks.live.thread_lending import ThreadLender


class FakePool:
    """A thread pool's size, with every resize recorded."""

    def __init__(self, size: int):
        self.size = size
        self.resizes: list[int] = []

    def get(self) -> int:
        return self.size

    def set(self, size: int) -> None:
        self.size = size
        self.resizes.append(size)


def test_lend_shrinks_the_pool_once_and_give_back_restores_it() -> None:
    pool = FakePool(8)
    lender = ThreadLender(pool.get, pool.set, count=2)
    lender.lend()
    lender.lend()
    assert (pool.size, lender.lent) == (6, True)
    lender.give_back()
    lender.give_back()
    assert (pool.size, lender.lent, pool.resizes) == (8, False, [6, 8])


def test_a_pool_too_small_to_lend_from_is_left_alone() -> None:
    pool = FakePool(1)
    lender = ThreadLender(pool.get, pool.set, count=1)
    lender.lend()
    lender.give_back()
    assert (pool.size, lender.lent, pool.resizes) == (1, False, [])


def test_a_pool_that_may_not_be_resized_now_is_lent_once_it_may() -> None:
    pool, resizable = FakePool(4), [False]
    lender = ThreadLender(pool.get, pool.set, lambda: resizable[0], count=1)
    lender.lend()
    assert (pool.size, lender.lent, pool.resizes) == (4, False, [])
    resizable[0] = True
    lender.lend()
    lender.give_back()
    assert (pool.size, pool.resizes) == (4, [3, 4])


def test_a_size_the_user_set_meanwhile_is_kept() -> None:
    pool = FakePool(4)
    lender = ThreadLender(pool.get, pool.set, count=1)
    lender.lend()
    pool.set(2)  # the user's own choice while lent
    lender.give_back()
    assert (pool.size, lender.lent) == (2, False)


class FakeWorker:
    """An analysis worker whose backlog the test sets."""

    def __init__(self) -> None:
        self.pending = False

    def messages(self) -> list[tuple[str, str]]:
        return []

    def close(self, timeout: float) -> list[tuple[str, str]]:
        return []

    dropped = 0


@pytest.mark.parametrize("lend_threads", [True, False])
def test_session_lends_while_snapshots_are_pending(tmp_path: Path, lend_threads: bool) -> None:
    pool = FakePool(4)
    config = SpectralConfig(log_dir=str(tmp_path), blas_threads=1, lend_threads=lend_threads)
    session = SpectralSession(
        config, framework="test", caller="Test", resume_hint="-", thread_pool=(pool.get, pool.set)
    )
    worker = FakeWorker()
    session._worker = worker
    worker.pending = True
    session.relay(force=True)
    assert pool.size == (3 if lend_threads else 4)
    session.relay(force=True)  # still pending: lent once only
    worker.pending = False
    session.relay(force=True)
    assert pool.size == 4
    worker.pending = True
    session.relay(force=True)
    session.close()  # training is over: the pool is whole again
    assert pool.size == 4
    assert pool.resizes == ([3, 4, 3, 4] if lend_threads else [])


def test_lend_threads_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="lend_threads"):
        SpectralConfig(lend_threads="yes")
