"""CRL numbers only ever grow, per issuer, whatever the number of replicas."""

from __future__ import annotations

import threading

import pytest

from ostiary.store import next_crl_number


def test_crl_numbers_start_at_one_and_count_per_issuer(store):
    with store.transaction() as session:
        assert [next_crl_number(session, "aa") for _ in range(3)] == [1, 2, 3]
        assert next_crl_number(session, "bb") == 1
    with store.transaction() as session:
        assert next_crl_number(session, "aa") == 4


def test_a_rolled_back_number_is_handed_out_again(store):
    def take_then_fail() -> None:
        with store.transaction() as session:
            next_crl_number(session, "aa")
            raise RuntimeError("CRL signing failed")

    with store.transaction() as session:
        assert next_crl_number(session, "aa") == 1
    with pytest.raises(RuntimeError):
        take_then_fail()
    with store.transaction() as session:
        assert next_crl_number(session, "aa") == 2


def test_crl_numbers_strictly_increase_under_concurrent_replicas(store, replica):
    per_thread = 15
    barrier = threading.Barrier(8)
    taken: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def publish(index: int) -> None:
        replica_store = [store, replica][index % 2]
        numbers = taken.setdefault(index, [])
        barrier.wait()
        try:
            for _ in range(per_thread):
                with replica_store.transaction() as session:
                    numbers.append(next_crl_number(session, "aa"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    everything = sorted(n for numbers in taken.values() for n in numbers)
    assert everything == list(range(1, 8 * per_thread + 1))  # no number twice, none skipped
    for numbers in taken.values():
        assert numbers == sorted(numbers)  # each replica sees them grow
