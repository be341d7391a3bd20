"""`widgets.formatting.cut_middle`: a label cut to the cells it may take, around `…`."""

from __future__ import annotations

import random

import pytest
from rich.cells import cell_len

from widgets.formatting import cut_middle


def test_a_label_that_fits_is_whole() -> None:
    assert cut_middle("linux,3.10", 10) == "linux,3.10"


def test_a_long_label_keeps_its_start_and_its_end() -> None:
    assert cut_middle("build-artifacts[os=linux,arch=arm64]", 12) == "build-…rm64]"


@pytest.mark.parametrize(
    ("value", "cells", "cut"),
    [("中文", 3, "…文"), ("テスト", 3, "…ト"), ("中a文b", 4, "中…b")],
)
def test_a_wide_character_that_does_not_fit_one_side_leaves_its_cell_to_the_other(
    value: str, cells: int, cut: str
) -> None:
    """Wide characters (CJK) take two cells: two values that differ in them must not both
    come out as a lone `…`."""
    assert cut_middle(value, cells) == cut


def test_a_cut_never_takes_more_cells_than_given_nor_shows_less_with_more_room() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        value = "".join(rng.choice("ab中文テxyz") for _ in range(rng.randint(0, 12)))
        shown = [cell_len(cut_middle(value, cells)) for cells in range(30)]
        assert all(taken <= cells for cells, taken in enumerate(shown)), value
        assert shown == sorted(shown), value
