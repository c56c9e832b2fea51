"""The SUCCESS CertRep started while the certificate's commit waits for the disk
(``ostiary.scep.responder._Success``): what is sent is always the CertRep of the certificate
the write returned, whether it was built in the CertRep thread or after the commit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ostiary.scep.message import Envelope
from ostiary.scep.reply import PkiStatus
from ostiary.scep.responder import _Success
from tests.scep.client import Request, read_reply, self_signed


@cache
def _key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _device() -> x509.Certificate:
    return self_signed(_key("device"), "device")


def _success(pool: ThreadPoolExecutor) -> tuple[_Success, x509.Certificate]:
    ra_key = _key("ra")
    ra = self_signed(ra_key, "Test SCEP RA")
    envelope = Envelope("7" * 20, b"\x01" * 16, _device(), "sha256", "aes128_cbc")
    return _Success(envelope, ra, ra_key, lambda: pool), ra


def _issued_in(encoded: bytes, ra: x509.Certificate) -> x509.Certificate | None:
    request = Request(_key("device"), _device(), 19, b"", [ra], cipher="aes128_cbc")
    reply = read_reply(encoded, request, ra)  # the RA's signature verified first
    assert reply.status == PkiStatus.SUCCESS
    return reply.certificate


def test_the_cert_rep_built_during_the_commit_is_the_one_sent() -> None:
    issued = self_signed(_key("issued"), "issued")
    with ThreadPoolExecutor(1) as pool:
        success, ra = _success(pool)
        success.start(issued)
        success.start(issued)  # a batch run again starts it again: built once
        assert _issued_in(success.reply(issued), ra) == issued


def test_a_repeat_answered_with_another_certificate_gets_the_cert_rep_of_that_one() -> None:
    started, first = self_signed(_key("issued"), "issued"), self_signed(_key("first"), "first")
    with ThreadPoolExecutor(1) as pool:
        success, ra = _success(pool)
        success.start(started)  # this write lost to the transaction's first answer
        assert _issued_in(success.reply(first), ra) == first


def test_a_build_not_begun_by_the_commit_s_end_is_taken_back_and_done_then() -> None:
    issued = self_signed(_key("issued"), "issued")
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(release.wait, 30)  # the CertRep thread is taken
        success, ra = _success(pool)
        success.start(issued)
        assert _issued_in(success.reply(issued), ra) == issued
        release.set()
        assert busy.result()


def test_a_cert_rep_thread_that_takes_no_work_leaves_it_for_after_the_commit() -> None:
    issued = self_signed(_key("issued"), "issued")
    pool = ThreadPoolExecutor(1)
    pool.shutdown()  # as at interpreter exit: submit raises RuntimeError
    success, ra = _success(pool)
    success.start(issued)  # does not raise (it would fail the write)
    assert _issued_in(success.reply(issued), ra) == issued
