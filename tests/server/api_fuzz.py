"""Schemathesis against a live ``ostiary ca serve``, with the credentials that reach deep paths.

:func:`prepare_target` gives a running server (a real subprocess, :mod:`tests.server.processes`)
what a fuzzer needs past the 401s: an enrolled certificate bound to an officer (presented over
mTLS on every request: holder for ``/renew`` and ``/revoke``, officer for the approval routes),
an ``approval`` provisioner, and the session's JWK provisioners whose keys mint one-time
tokens with the CA's own code. :func:`fuzz_api` then runs every operation of the served
``/openapi.json`` (positive and negative cases) and a stateful run of the state machine
schemathesis derives from the document.

Credentials go in through a schemathesis ``before_call`` hook (:class:`_Credentials`), at the
moment of the call (so a token is fresh and unused): a positive case takes turns being sent as
generated, with an admin Bearer token, with a fresh sign token and a valid CSR, with a known
serial or request id, or replaying a token the server already accepted. Negative cases are
sent as generated (giving them credentials could make them valid).

Checks: every schemathesis check (no 5xx, status codes, content types, headers and bodies
conform to the document, negative data rejected), plus :func:`_accepted_only_when_authorized`:
no token the server accepted once is accepted again, and no ``POST /sign`` or admin route
succeeds without a credential the run minted. ``fuzz/api.py`` runs the same with more examples.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given
from schemathesis import Case, CheckContext, GenerationMode, HookContext, Response
from schemathesis.core.failures import Failure
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ostiary.provisioners.approval import APPROVAL_TYPE, ApprovalProvisioner
from ostiary.provisioners.officers import bind_officer_certificate
from ostiary.store import ProvisionerRepository, Store
from tests.server.conftest import Provisioners, make_csr
from tests.server.processes import CAFolder, ServeProcess

#: OCSP requests (RFC 6960 appendix A.1) are bytes on the wire, as octet-stream bodies are.
schemathesis.serializer.alias("application/ocsp-request", "application/octet-stream")

APPROVALS = "gates"
OFFICER = "fuzz-officer"
#: positive_data_acceptance expects schema-valid data to succeed, but no JSON Schema says
#: what a valid CSR, JWT or TPM structure is: "0" as a CSR is schema-valid and rightly a 400.
_EXCLUDED = [positive_data_acceptance]
#: Operations whose success needs an admin Bearer token (or, for some, a holder's mTLS).
_ADMIN_ONLY = {("GET", "/certificates"), ("GET", "/certificates/{serial}")}


@dataclass
class Target:
    """A live server and the credentials the hooks hand out."""

    server: ServeProcess
    ca: CAFolder
    provisioners: Provisioners
    root_file: Path
    cert_file: Path
    key_file: Path
    officer_serial: int


@dataclass
class FuzzResult:
    """What a run tried and what failed (one line per distinct failure)."""

    cases: int = 0
    deep: int = 0  # cases answered 2xx: past authentication and validation
    statuses: dict[str, set[int]] = field(default_factory=dict)  # operation label: codes seen
    failures: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, case: Case, response: Response, error: BaseException) -> None:
        errors = error.exceptions if isinstance(error, BaseExceptionGroup) else (error,)
        with self.lock:
            for each in errors:
                title = getattr(each, "title", None) or type(each).__name__
                detail = (
                    f"{response.status_code}: {str(each)[-1500:]}\n{case.as_curl_command()[:1500]}"
                )
                self.failures.setdefault(f"{case.operation.label}: {title}", detail)


def prepare_target(server: ServeProcess, ca: CAFolder, provisioners: Provisioners) -> Target:
    """Enroll a certificate, bind it to an officer, add an approval provisioner."""
    folder = ca.paths.root
    root_file = folder / "fuzz-root.pem"
    root_file.write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    csr, key = make_csr("fuzz-officer@example.com")
    token = provisioners.ops.mint_sign_token(
        provisioners.ops_key, "fuzz-officer@example.com", ca=ca.identity, now=datetime.now(UTC)
    )
    with server.client() as client:
        answer = client.post("/sign", json={"csr": csr, "token": token})
    answer.raise_for_status()
    body = answer.json()
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    cert_file, key_file = folder / "fuzz-holder.crt", folder / "fuzz-holder.key"
    cert_file.write_text(body["certificate"] + "".join(body["chain"]))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    store = Store.from_url(ca.database_url)
    try:
        bind_officer_certificate(
            store, OFFICER, certificate, ca=ca.identity, now=datetime.now(UTC), actor=None
        )
        approvals = ApprovalProvisioner(name=APPROVALS, claims=provisioners.ops.claims)
        with store.transaction() as session:
            ProvisionerRepository(session).add(
                APPROVALS, type=APPROVAL_TYPE, config=approvals.to_config()
            )
    finally:
        store.dispose()
    return Target(
        server, ca, provisioners, root_file, cert_file, key_file, certificate.serial_number
    )


#: The order of turns: a valid request first, so that even a short run reaches every deep
#: path; then an admin token, a known serial or id, a replayed token, the case as generated.
_TURNS = (2, 3, 1, 4, 0)


class _Credentials:
    """The ``before_call`` hook: fresh credentials for positive cases, in turn."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.turns: dict[str, itertools.count[int]] = {}  # per operation: each gets each turn
        self.lock = threading.Lock()
        self.minted: set[str] = set()  # tokens this run made
        self.accepted: set[str] = set()  # tokens the server accepted
        self.serials: list[str] = []  # certificates issued during the run (never the officer's)
        self.request_ids: list[str] = []

    def sign_token(self, subject: str) -> str:
        p = self.target.provisioners
        token = p.ops.mint_sign_token(p.ops_key, subject, ca=self.target.ca.identity, now=_now())
        self.minted.add(token)
        return token

    def admin_token(self) -> str:
        p = self.target.provisioners
        token = p.admins.mint_admin_token(p.admins_key, ca=self.target.ca.identity, now=_now())
        self.minted.add(token)
        return token

    def before_call(self, context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
        if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
            return
        with self.lock:
            count = next(self.turns.setdefault(case.operation.label, itertools.count()))
            turn = _TURNS[count % len(_TURNS)]
            serials, request_ids, accepted = (
                list(self.serials),
                list(self.request_ids),
                list(self.accepted),
            )
        if turn == 0:
            return  # as generated
        if turn in (1, 3):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {self.admin_token()}"}
        params = dict(case.path_parameters or {})
        if "name" in params:
            params["name"] = ("ops", "admins", APPROVALS)[turn % 3]
        if "serial" in params and serials:
            params["serial"] = serials[turn % len(serials)]
        if "request_id" in params and request_ids:
            params["request_id"] = request_ids[turn % len(request_ids)]
        case.path_parameters = params
        if turn in (2, 3) and case.query:  # a fuzzed filter (a NUL in ?q=) is rightly a 400
            required = {p.name for p in case.operation.query if p.is_required}
            case.query = {k: v for k, v in case.query.items() if k in required}
        body = case.body
        if not isinstance(body, dict):
            return
        body = dict(body)
        if turn in (2, 3):  # only what the operation needs: a fuzzed option would be refused
            for option in ("not_after", "attestation", "note"):
                body.pop(option, None)
        if "csr" in body and turn >= 2:  # the approval profile ("device") needs a URI name
            sans = ("uri:urn:fuzz:device",) if "provisioner" in body else ()
            body["csr"], _ = make_csr("fuzz@example.com", sans)
        if "token" in body and turn >= 2:
            replay = turn == 4 and accepted
            body["token"] = accepted[0] if replay else self.sign_token("fuzz@example.com")
        if "provisioner" in body and turn >= 2:
            body["provisioner"] = APPROVALS
        if "serial_number" in body and turn == 3 and serials:
            body["serial_number"], body["reason"] = serials[-1], "superseded"
        case.body = body

    def after_call(self, context: HookContext, case: Case, response: Response) -> None:
        if not 200 <= response.status_code < 300:
            return
        data = _json(response)
        with self.lock:
            token = case.body.get("token") if isinstance(case.body, dict) else None
            if isinstance(token, str):
                self.accepted.add(token)
            serial = data.get("serial_number")
            if (
                isinstance(serial, str)
                and int(serial.replace(":", ""), 16) != self.target.officer_serial
            ):
                self.serials.append(serial)
            if isinstance(data.get("request_id"), str):
                self.request_ids.append(data["request_id"])


def _now() -> datetime:
    return datetime.now(UTC)


def _json(response: Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _authorization_token(case: Case) -> str | None:
    header = (case.headers or {}).get("Authorization")
    if isinstance(header, str) and header.startswith("Bearer "):
        return header.removeprefix("Bearer ")
    return None


def _accepted_only_when_authorized(credentials: _Credentials) -> Callable[..., None]:
    """A check: 2xx only with a credential this run minted, and no accepted token twice."""
    seen: set[str] = set()
    lock = threading.Lock()

    def check(ctx: CheckContext, response: Response, case: Case) -> None:
        if not 200 <= response.status_code < 300:
            return
        operation = (case.operation.method.upper(), case.operation.path)
        token = case.body.get("token") if isinstance(case.body, dict) else None
        if operation == ("POST", "/sign"):
            if token not in credentials.minted:
                raise Failure(
                    operation=case.operation.label,
                    title="Accepted a sign token the run did not mint",
                    message=f"{response.status_code} for token {str(token)[:40]!r}",
                )
            with lock:
                if token in seen:
                    raise Failure(
                        operation=case.operation.label,
                        title="Accepted a one-time token twice",
                        message=f"{response.status_code} for a replayed token",
                    )
                seen.add(token)
        if operation in _ADMIN_ONLY and _authorization_token(case) not in credentials.minted:
            raise Failure(
                operation=case.operation.label,
                title="Admin route answered without an admin token",
                message=str(response.status_code),
            )

    return check


def load_schema(target: Target, *, examples: int) -> schemathesis.BaseSchema:
    with target.server.client() as client:
        document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(
        base_url=target.server.https_url,
        tls_verify=str(target.root_file),
        request_cert=str(target.cert_file),
        request_cert_key=str(target.key_file),
        request_timeout=30,
    )
    # A string within its maxLength in characters can pass the 64 KiB body cap in UTF-8
    # bytes: 413 is a refusal too (docs/api.md, body limits).
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    schema.config.generation.update(
        modes=list(GenerationMode), max_examples=examples, database="none"
    )
    return schema


def fuzz_api(target: Target, *, examples: int, steps: int = 8) -> FuzzResult:
    """Every operation (``examples`` cases each), then a stateful run; returns the tally."""
    schema = load_schema(target, examples=examples)
    credentials = _Credentials(target)
    result = FuzzResult()
    check = _accepted_only_when_authorized(credentials)

    def counted(context: HookContext, case: Case, response: Response) -> None:
        with result.lock:
            result.cases += 1
            result.deep += 200 <= response.status_code < 300
            result.statuses.setdefault(case.operation.label, set()).add(response.status_code)
        credentials.after_call(context, case, response)

    settings = hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        stateful_step_count=steps,
    )

    def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
        credentials.before_call(context, case, kwargs)

    hooks = [schemathesis.hook("before_call")(before_call)]
    hooks.append(schemathesis.hook("after_call")(counted))
    try:
        _run(schema, settings, check, result)
    finally:
        for hook in hooks:  # before_call hooks are global in schemathesis 4
            GLOBAL_HOOK_DISPATCHER.unregister(hook)
    return result


def _run(
    schema: schemathesis.BaseSchema,
    settings: hypothesis.settings,
    check: Callable[..., None],
    result: FuzzResult,
) -> None:
    # Each mode gets its share of the examples: drawn from one_of, a short run of six could
    # hold a single positive case, and the credentials are handed out to positive cases only.
    per_mode = hypothesis.settings(
        settings, max_examples=max(3, settings.max_examples // len(GenerationMode))
    )
    for operation_result in schema.get_all_operations():
        operation = operation_result.ok()
        for mode in GenerationMode:

            @per_mode
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Case) -> None:
                response = case.call()
                try:
                    case.validate_response(
                        response, additional_checks=[check], excluded_checks=_EXCLUDED
                    )
                except (Exception, BaseExceptionGroup) as error:  # a FailureGroup: recorded
                    result.record(case, response, error)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # nothing to make invalid: no parameters
                if mode == GenerationMode.POSITIVE:
                    raise

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def validate_response(self, response: Response, case: Case, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response, additional_checks=[check], excluded_checks=_EXCLUDED
                )
            except (Exception, BaseExceptionGroup) as error:
                result.record(case, response, error)

    try:
        Machine.run(settings=settings)
    except Exception as error:  # e.g. hypothesis' FlakyStrategyDefinition: reported, not hidden
        with result.lock:
            result.failures[f"stateful run: {type(error).__name__}"] = str(error)[:1500]


__all__ = ["FuzzResult", "Target", "fuzz_api", "load_schema", "prepare_target"]
