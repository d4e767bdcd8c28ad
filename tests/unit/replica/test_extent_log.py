"""The DR site's staged-record format: ``locate`` on a freshly written record agrees with ``scan``."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from services.replica.dr import extent_log

record_args = st.tuples(
    st.text(alphabet="abcdefgh0123456789-_", min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**40),
    st.one_of(st.none(), st.binary(min_size=1, max_size=300)),
    st.integers(min_value=1, max_value=2**20),
)


@given(st.lists(record_args, max_size=8))
def test_locate_agrees_with_scan(args: list[tuple[str, int, bytes | None, int]]) -> None:
    log = bytearray()
    located = []
    for index, (disk, offset, data, zero_length) in enumerate(args):
        length = zero_length if data is None else len(data)
        record = extent_log.encode_record(index, disk, offset, length, data)
        located.append(extent_log.locate(record, len(log)))
        log += record
    assert list(extent_log.scan(io.BytesIO(bytes(log)))) == located
    for info, (_disk, _offset, data, _zero) in zip(located, args, strict=True):
        if data is not None:
            assert bytes(log[info.data_position : info.data_position + info.length]) == data
