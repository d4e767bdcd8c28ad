"""Status codes and google.rpc BadRequest and ErrorInfo details become the right exception with its field
violations, reason and metadata."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from overland import errors


def _metadata(code: grpc.StatusCode, violations: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    status = status_pb2.Status(code=code.value[0], message="bad")
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
    )
    status.details.append(detail)
    return [("other", b"x"), (errors.STATUS_DETAILS_KEY, status.SerializeToString())]


@given(st.sampled_from(list(grpc.StatusCode)))
def test_every_status_code_has_an_exception_of_that_code(code: grpc.StatusCode) -> None:
    error = errors.error_from_status(code, "message")
    assert isinstance(error, errors.OverlandError)
    if code is not grpc.StatusCode.OK:
        assert error.code is code


@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.text(max_size=60)), max_size=5))
def test_field_violations_survive_the_trailing_metadata(violations: list[tuple[str, str]]) -> None:
    error = errors.error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", _metadata(grpc.StatusCode.INVALID_ARGUMENT, violations)
    )
    assert isinstance(error, errors.InvalidArgumentError)
    assert [(v.field, v.description) for v in error.field_violations] == violations


def test_message_without_details_has_no_violations() -> None:
    error = errors.error_from_status(grpc.StatusCode.NOT_FOUND, "gone", [("key", "value")])
    assert isinstance(error, errors.NotFoundError)
    assert error.field_violations == ()
    assert str(error) == "gone"


def test_str_lists_the_violations() -> None:
    error = errors.InvalidArgumentError("bad record", [errors.FieldViolation("mac", "not a MAC")])
    assert str(error) == "bad record (mac: not a MAC)"


def test_a_non_call_rpc_error_is_unknown() -> None:
    assert isinstance(errors.error_from_rpc(grpc.RpcError()), errors.UnknownError)


@given(
    st.text(max_size=30),
    st.text(max_size=30),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    st.lists(st.tuples(st.text(min_size=1, max_size=30), st.text(max_size=60)), max_size=3),
)
def test_error_info_survives_the_trailing_metadata_beside_violations(
    reason: str, domain: str, metadata: dict[str, str], violations: list[tuple[str, str]]
) -> None:
    trailers = _metadata(grpc.StatusCode.RESOURCE_EXHAUSTED, violations)
    status = status_pb2.Status.FromString(trailers[1][1])
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata))
    trailers[1] = (errors.STATUS_DETAILS_KEY, status.SerializeToString())
    error = errors.error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", trailers)
    assert isinstance(error, errors.ResourceExhaustedError)
    assert (error.reason, error.domain, error.metadata) == (reason, domain, metadata)
    assert [(v.field, v.description) for v in error.field_violations] == violations


def test_an_error_without_error_info_has_no_reason() -> None:
    error = errors.error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", _metadata(grpc.StatusCode.INVALID_ARGUMENT, [("f", "d")])
    )
    assert (error.reason, error.domain, error.metadata) == ("", "", {})
