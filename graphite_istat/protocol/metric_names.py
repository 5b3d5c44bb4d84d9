"""Carbon's metric-name normalisation: tagged series in canonical form, invalid tags refused.

Carbon (``TaggedSeries.parse(name).path``) rewrites every received name:

* ``name;tag2=b;tag1=a`` becomes ``name;tag1=a;tag2=b`` (tags sorted, the
  last of duplicate tags wins, a ``name`` tag is replaced by the metric part);
* ``name{tag1="a",tag2="b"}`` (OpenMetrics style) becomes the same form;
* leading ``~`` of the metric part are dropped (``~a.b`` becomes ``a.b``).

Tags must be non-empty, tag names may not contain ``;!^=``, tag values may not
contain ``;`` nor start with ``~``. Where carbon logs such a name and stores it
unchanged, this module refuses it, so that the store never holds a name that
graphite's tag database cannot parse.
"""

from __future__ import annotations

import re

from graphite_istat.protocol.result import BAD_TAGS, EMPTY_NAME

_FORBIDDEN_IN_TAG = frozenset(";!^=")
# One OpenMetrics label: name="value" with \" and \\ escapes, then a comma or the end.
# Carbon also takes ":," as a separator (a quirk of its pattern), and so does this one.
_OPENMETRICS_LABEL = re.compile(r'([^=]+)="((?:\\["\\]|[^"\\])+)"(?::?,|$)')


class InvalidMetricName(ValueError):
    """A name carbon cannot normalise; ``reason`` is the rejection counter to bump."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def needs_normalising(name: str) -> bool:
    """Whether ``normalise_metric_name`` could return something other than ``name``."""
    return ";" in name or name.startswith("~") or (name.endswith('"}') and "{" in name)


def normalise_metric_name(name: str) -> str:
    """Return carbon's canonical form of ``name``; raise ``InvalidMetricName`` if it has none."""
    if not needs_normalising(name):
        if not name:
            raise InvalidMetricName(EMPTY_NAME, "empty metric name")
        return name
    if name.endswith('"}') and "{" in name:
        metric, tags = _split_openmetrics(name)
    else:
        metric, tags = _split_carbon_tags(name)
    tags["name"] = _metric_as_tag_value(metric)
    return tags["name"] + "".join(
        sorted(f";{tag}={value}" for tag, value in tags.items() if tag != "name")
    )


def _split_carbon_tags(name: str) -> tuple[str, dict[str, str]]:
    metric, *segments = name.split(";")
    if not metric:
        raise InvalidMetricName(EMPTY_NAME, f"no metric before the tags in {name!r}")
    tags: dict[str, str] = {}
    for segment in segments:
        tag, sep, value = segment.partition("=")
        if not sep or not tag:
            raise InvalidMetricName(BAD_TAGS, f"tag segment {segment!r} is not tag=value")
        _check_tag(tag, value)
        tags[tag] = value
    return metric, tags


def _split_openmetrics(name: str) -> tuple[str, dict[str, str]]:
    parts = name[:-1].split("{")
    if len(parts) > 2:
        raise InvalidMetricName(BAD_TAGS, f"more than one '{{' in {name!r}")
    metric, labels = parts
    if not metric:
        raise InvalidMetricName(EMPTY_NAME, f"no metric before the labels in {name!r}")
    tags: dict[str, str] = {}
    while labels:
        match = _OPENMETRICS_LABEL.match(labels)
        if match is None:
            raise InvalidMetricName(BAD_TAGS, f"cannot parse labels {labels!r}")
        tag = match.group(1)
        value = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
        _check_tag(tag, value)
        tags[tag] = value
        labels = labels[match.end() :]
    return metric, tags


def _check_tag(tag: str, value: str) -> None:
    if not tag:
        raise InvalidMetricName(BAD_TAGS, "empty tag name")
    if not value:
        raise InvalidMetricName(BAD_TAGS, f"empty value for tag {tag!r}")
    if not _FORBIDDEN_IN_TAG.isdisjoint(tag):
        raise InvalidMetricName(BAD_TAGS, f"tag name {tag!r} contains one of ;!^=")
    if ";" in value:
        raise InvalidMetricName(BAD_TAGS, f"value {value!r} of tag {tag!r} contains ';'")
    if value.startswith("~"):
        raise InvalidMetricName(BAD_TAGS, f"value {value!r} of tag {tag!r} starts with '~'")


def _metric_as_tag_value(metric: str) -> str:
    stripped = metric.lstrip("~")
    if not stripped:
        raise InvalidMetricName(EMPTY_NAME, f"metric {metric!r} is empty without its leading '~'")
    return stripped
