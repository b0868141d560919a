"""Decoding many `pgoutput` row messages at once, in NumPy, into Arrow text columns.

The capture loop keeps inserts and updates undecoded (`_pgoutput.plain_new_row`) and hands a
batch's worth here: per-value work leaves the Python loop (~0.4 us a row against ~3 us).
"""

import numpy as np
import pyarrow as pa

from beam_etl.io._pgoutput import NEW_TUPLE_AT


def tuple_columns(payloads: list[bytes], columns: int) -> list[pa.Array] | None:
    """Decode the new rows of many `plain_new_row` messages of one relation at once, in
    NumPy: a text array per column (null for null). None when a message holds a TOAST value
    the update left unchanged, or does not have `columns` values (decode those one by one).

    Raises:
        ValueError: a malformed message, or text that is not UTF-8.
    """
    rows = len(payloads)
    if not rows:
        return [pa.array([], pa.string()) for _ in range(columns)]
    ends = np.cumsum(np.fromiter(map(len, payloads), np.int64, rows))
    buffer = np.frombuffer(b"".join(payloads), np.uint8)
    at = np.empty(rows, np.int64)  # where each message's TupleData starts
    at[0] = NEW_TUPLE_AT
    at[1:] = ends[:-1] + NEW_TUPLE_AT
    if (at + 2 > ends).any():
        raise ValueError("A pgoutput message ends before its values")
    counts = (buffer[at].astype(np.int64) << 8) | buffer[at + 1]
    if not (counts == columns).all():
        return None
    at += 2
    arrays = []
    for _ in range(columns):
        if (at >= ends).any():
            raise ValueError("A pgoutput message ends before its values")
        kind = buffer[at]
        text = kind == 116  # t
        if (kind == 117).any():  # u: a TOAST value the update left unchanged
            return None
        if not (text | (kind == 110)).all():
            raise ValueError("Unknown pgoutput tuple value kind")
        lengths = np.zeros(rows, np.int64)
        where = np.flatnonzero(text)
        if where.size:
            head = at[where] + 1
            if (head + 4 > ends[where]).any():
                raise ValueError("A pgoutput message ends before its values")
            size = buffer[head].astype(np.int64) << 24
            size |= buffer[head + 1].astype(np.int64) << 16
            size |= buffer[head + 2].astype(np.int64) << 8
            size |= buffer[head + 3]
            lengths[where] = size
        starts = at + 5
        if (text & (starts + lengths > ends)).any():
            raise ValueError("A pgoutput message ends before its values")
        offsets = np.zeros(rows + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        data = buffer[np.repeat(starts - offsets[:-1], lengths) + np.arange(total)]
        large = total >= 2**31
        array = (pa.LargeStringArray if large else pa.StringArray).from_buffers(
            rows,
            pa.py_buffer(offsets if large else offsets.astype(np.int32)),
            pa.py_buffer(data),
            pa.py_buffer(np.packbits(text, bitorder="little")),
            rows - where.size,
        )
        array.validate(full=True)  # UTF-8
        arrays.append(array.cast(pa.string()) if large else array)
        at = np.where(text, starts + lengths, at + 1)
    return arrays
