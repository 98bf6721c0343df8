"""Schemathesis over the OpenAPI schema of the endpoint (the running Serve app, or the ASGI app
over a fake backend): for every operation, a bounded number of positive (schema-valid) and
negative (schema-invalid) examples, each sent and checked; the failures are collected and
counted instead of stopping at the first one.

Checks: no 5xx; every status, content type and header declared; every JSON body valid against
its declared schema; schema-valid requests accepted, schema-invalid ones rejected; with auth,
the request replayed without its token refused. A 504 for a request that set its own
``timeout_s`` is the documented answer to a deadline the client chose (counted apart)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "positive_data_acceptance",
          "negative_data_rejection", "ignored_auth")
# failures that mean a response broke the declared schema
SCHEMA_FAILURES = {"UndefinedStatusCode", "MissingHeaders", "JsonSchemaError", "MissingContentType",
                   "MalformedMediaType", "ContentDeserializationError", "DiscriminatorMismatch",
                   "UndefinedContentType", "MalformedJson"}


@dataclass
class FuzzReport:
    examples: Counter[str] = field(default_factory=Counter)  # per "METHOD /path mode"
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx other than a client's own deadline
    client_deadlines: int = 0  # 504 for a request that set timeout_s
    schema_violations: list[str] = field(default_factory=list)
    other_failures: list[str] = field(default_factory=list)  # positive/negative data, auth

    def summary(self) -> dict[str, Any]:
        return {"examples": dict(self.examples), "server_errors": len(self.server_errors),
                "client_deadlines_504": self.client_deadlines, "schema_violations": len(self.schema_violations),
                "other_failures": len(self.other_failures),
                "statuses": {f"{op} {s}": n for (op, s), n in sorted(self.statuses.items())}}


def _check_name(failure: Any) -> str:
    return str(getattr(failure, "title", type(failure).__name__))


def fuzz(schema: Any, max_examples: int, headers: dict[str, str] | None = None,
         call_kwargs: dict[str, Any] | None = None) -> FuzzReport:
    """Run every operation of ``schema`` (a schemathesis schema, its base URL or app set)."""
    from schemathesis import GenerationMode, checks

    check_fns = [getattr(checks, name) for name in CHECKS]
    report = FuzzReport()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(op, mode, max_examples, headers, call_kwargs, check_fns, report)
    return report


def _run_operation(op: Any, mode: Any, max_examples: int, headers: dict[str, str] | None,
                   call_kwargs: dict[str, Any] | None, check_fns: list[Any], report: FuzzReport) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.core.failures import FailureGroup

    label = f"{op.method.upper()} {op.path} {mode.value}"

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        report.examples[label] += 1
        response = case.call(headers=headers, **(call_kwargs or {}))
        report.statuses[(label, response.status_code)] += 1
        own_deadline = isinstance(case.body, dict) and case.body.get("timeout_s") is not None
        if response.status_code == 504 and own_deadline:
            report.client_deadlines += 1
        try:
            case.validate_response(response, checks=check_fns, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                name = type(failure).__name__
                text = (f"{label}: {name}: {_check_name(failure)} [{response.status_code}] "
                        f"{response.text[:200]!r} (body {str(case.body)[:200]})")
                if name == "ServerError":
                    if not (response.status_code == 504 and own_deadline):
                        report.server_errors.append(text)
                elif name in SCHEMA_FAILURES:
                    report.schema_violations.append(text)
                else:
                    report.other_failures.append(text)

    try:
        run()
    except Unsatisfiable:  # e.g. no negative example of an operation without parameters
        report.examples[label] += 0
