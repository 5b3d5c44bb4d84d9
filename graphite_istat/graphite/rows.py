"""Rows of a bulk read as graphite-web receives them, and the arrays behind them for the function plugin.

graphite-web copies every fetched series into a ``TimeSeries``, a Python
list of floats with ``None`` for an empty bucket. ``RowValues`` is the
sequence the finder hands over instead of a list: it keeps the row as the
float64 array the store read produced (NaN = empty) and makes the Python
objects only when graphite-web iterates it, once, into a tuple. A tuple of
floats holds no object the garbage collector follows, so Python untracks it
at its first collection; a render of 10,000 series x 2,160 points then costs
the collector one pass over those values instead of one per collection (a
list stays tracked, and a full collection walks every item of every list).

The finder also records each row in the request context (``record_rows``).
graphite_istat.functions looks a ``TimeSeries`` up there (``recorded_array``)
and takes the array instead of converting the list back, after checking that
the series still holds exactly the objects the row gave it (a function such
as ``scale`` changes series in place; then the lookup answers None and the
list is converted as before).

No graphite-web or Django import: plain sequences and dicts.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, overload

import numpy as np

# requestContext key of the rows the finder read for this request:
# (name, start, step, length) -> RowValues
CONTEXT_KEY = "graphite_istat.rows"


class RowValues(Sequence):
    """One series' values: float64 in ``array`` (NaN = empty), Python floats and None when read."""

    __slots__ = ("_objects", "array")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._objects: tuple[float | None, ...] | None = None

    def objects(self) -> tuple[float | None, ...]:
        """The values as Python objects, made once: floats, ``None`` for an empty bucket."""
        objects = self._objects
        if objects is None:
            objects = self._objects = tuple(to_list(self.array))
        return objects

    def __len__(self) -> int:
        return len(self.array)

    def __iter__(self) -> Iterator[float | None]:
        return iter(self.objects())

    @overload
    def __getitem__(self, index: int) -> float | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[float | None]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self.objects()[index])
        return self.objects()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowValues):
            return self.objects() == other.objects()
        if isinstance(other, (list, tuple)):
            return list(self.objects()) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares by value, like a list

    def __repr__(self) -> str:
        return f"RowValues({list(self.objects())!r})"


def to_list(values: np.ndarray) -> list[float | None]:
    """Floats, exactly as stored, with ``None`` for NaN."""
    empty = np.isnan(values)
    if not empty.any():
        return values.tolist()
    # An object array holding None and the floats: one C pass, then a plain copy to a list.
    return np.where(empty, None, values).tolist()


def record_rows(context: MutableMapping[str, Any], rows: Mapping[tuple[str, int, int], RowValues]) -> None:
    """Remember ``rows`` (by path, start and step) for the functions of this request."""
    recorded = context.setdefault(CONTEXT_KEY, {})
    for (path, start, step), row in rows.items():
        recorded[(path, start, step, len(row))] = row


def recorded_array(context: Mapping[str, Any] | None, series: list) -> np.ndarray | None:
    """The float64 array (NaN = empty) behind ``series`` when it is a row read unchanged, else None.

    ``series`` is a ``TimeSeries`` (any list with ``name``, ``start`` and
    ``step``). Its items are compared with the row's objects (identity
    first, as tuple comparison does, so the common case costs a pointer
    test per point): a value changed in place to an unequal one is noticed,
    and the signs of zeros are compared, so ``0.0`` replaced by ``-0.0`` is
    noticed too. Equal floats are otherwise the same bits; an int equal to
    the float it replaced is read as that float, which is what the plugin
    does with ints anyway.
    """
    if not context:
        return None
    recorded = context.get(CONTEXT_KEY)
    if not recorded:
        return None
    row = recorded.get((getattr(series, "name", None), getattr(series, "start", None),
                        getattr(series, "step", None), len(series)))
    if row is None or row._objects is None:
        return None
    objects = row._objects
    if not list.__eq__(series, list(objects)):
        return None
    zeros = np.flatnonzero(row.array == 0.0)
    if len(zeros):
        # equal, but 0.0 and -0.0 are equal too: compare the signs of the zeros
        held = operator.itemgetter(*zeros.tolist())(series) if len(zeros) > 1 else (series[int(zeros[0])],)
        if not np.array_equal(np.signbit(np.array(held, dtype=np.float64)), np.signbit(row.array[zeros])):
            return None
    return row.array
