"""Rows handed to graphite-web (graphite/rows.py): list behaviour, and the arrays the plugin may take back."""

from __future__ import annotations

import gc
import math

import numpy as np

from graphite_istat.graphite.rows import CONTEXT_KEY, RowValues, record_rows, recorded_array


class Series(list):
    """What the plugin receives: a list with graphite-web's TimeSeries attributes."""

    def __init__(self, name: str, start: int, step: int, values) -> None:
        list.__init__(self, values)
        self.name, self.start, self.step = name, start, step


ROW = np.array([1.5, np.nan, 0.0, -0.0, 2.25, np.nan, 7.0, 8.5])


def recorded(row: np.ndarray = ROW) -> tuple[dict, RowValues, Series]:
    values = RowValues(row)
    context: dict = {}
    record_rows(context, {("a.b", 100, 10): values})
    return context, values, Series("a.b", 100, 10, values)


def test_row_values_read_like_the_list_of_floats_and_none():
    values = RowValues(ROW)
    assert len(values) == 8
    assert list(values) == [1.5, None, 0.0, -0.0, 2.25, None, 7.0, 8.5]
    assert values == [1.5, None, 0.0, -0.0, 2.25, None, 7.0, 8.5]
    assert values[0] == 1.5 and values[1] is None and values[-4] == 2.25
    assert values[1:3] == [None, 0.0]
    assert math.copysign(1.0, values[3]) == -1.0
    assert all(type(v) is float for v in values if v is not None)
    assert values != [1.5]
    assert repr(values).startswith("RowValues([1.5, None")


def test_row_values_give_the_same_objects_every_time():
    values = RowValues(ROW)
    first, second = list(values), list(values)
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_row_values_are_untracked_by_the_collector_once_collected():
    values = RowValues(np.arange(1000.0))
    objects = values.objects()
    gc.collect()
    assert not gc.is_tracked(objects)


def test_an_unchanged_series_gives_back_its_array():
    context, _, series = recorded()
    assert recorded_array(context, series) is ROW


def test_a_value_changed_in_place_is_noticed():
    context, _, series = recorded()
    series[4] = 2.5
    assert recorded_array(context, series) is None


def test_an_equal_value_of_another_sign_of_zero_is_noticed():
    context, _, series = recorded()
    series[2] = -0.0  # equal to 0.0, yet minSeries and multiplySeries would differ
    assert recorded_array(context, series) is None
    context, _, series = recorded()
    series[3] = 0.0 * 1  # a new +0.0 where the row held -0.0
    assert recorded_array(context, series) is None


def test_an_emptied_or_filled_point_is_noticed():
    context, _, series = recorded()
    series[0] = None
    assert recorded_array(context, series) is None
    context, _, series = recorded()
    series[1] = 0.0
    assert recorded_array(context, series) is None


def test_another_series_or_another_grid_is_not_taken():
    context, values, _ = recorded()
    assert recorded_array(context, Series("a.c", 100, 10, values)) is None
    assert recorded_array(context, Series("a.b", 110, 10, values)) is None
    assert recorded_array(context, Series("a.b", 100, 60, values)) is None
    assert recorded_array(context, Series("a.b", 100, 10, list(values)[:-1])) is None
    assert recorded_array({}, Series("a.b", 100, 10, values)) is None
    assert recorded_array(None, Series("a.b", 100, 10, values)) is None


def test_equal_floats_that_are_other_objects_are_the_same_values():
    context, values, _ = recorded(np.array([1.5, 2.25, np.nan]))
    copies = [None if v is None else float(repr(v)) for v in values]
    assert recorded_array(context, Series("a.b", 100, 10, copies)) is not None


def test_a_row_never_handed_to_graphite_web_is_not_taken():
    values = RowValues(ROW)
    context: dict = {}
    record_rows(context, {("a.b", 100, 10): values})
    assert CONTEXT_KEY in context
    assert recorded_array(context, Series("a.b", 100, 10, [1.5, None, 0.0, -0.0, 2.25, None, 7.0, 8.5])) is None


def test_rows_of_zeros_are_checked_sign_by_sign():
    row = np.array([0.0, -0.0, 0.0, 0.0])
    context, _, series = recorded(row)
    assert recorded_array(context, series) is row
    series[2] = -0.0
    assert recorded_array(context, series) is None
    context, _, series = recorded(np.array([-0.0]))
    assert recorded_array(context, series) is not None
    series[0] = 0.0
    assert recorded_array(context, series) is None
