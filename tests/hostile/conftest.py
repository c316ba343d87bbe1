"""The hostile-input suite: each case is one kind of bad input or fault, fed as a user would.

Every case asserts the documented exit code or HTTP status, that the message names the place
(file:line:col, the line, the field or the index), that no traceback is printed, and that the
good rows sent beside the bad ones are all there afterwards. Cases are tables of
`(id, input, expected)` so that each kind is counted once in the test report.
"""

from __future__ import annotations

import re

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \".*\", line \d+", re.MULTILINE)


def assert_no_traceback(text: str) -> None:
    """No Python traceback (nor a frame of one) reached the user."""
    assert not TRACEBACK.search(text), f"traceback in output:\n{text}"


def assert_names(text: str, *places: str) -> None:
    """The message names every one of `places` (a path, a line, a field, an index)."""
    for place in places:
        assert place in text, f"{place!r} not named in:\n{text}"
