"""``validate_order``: compressing stages in an order that decodes, or a clear ValueError."""

import pytest

from fedforge.transforms import (
    Cast,
    ErrorFeedback,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Zstd,
    validate_order,
)
from tests.test_pipeline import _Counter


@pytest.mark.parametrize(
    "ts",
    [
        [],
        [Quantize(8)],
        [TopK(0.01), Quantize(8), Zstd()],
        [ErrorFeedback(TopK(0.01), Quantize(8)), Zstd()],
        [ErrorFeedback(TopK(0.01)), Quantize(4)],
        [_Counter(), RandomK(0.1), Cast(), Zstd()],
    ],
)
def test_valid_orders(ts):
    validate_order(ts)
    Pipeline(ts)


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        ([Zstd(), Quantize(8)], "must be the last"),
        ([Zstd(), _Counter()], "must be the last"),
        ([Quantize(8), Quantize(4)], "only one quantizer"),
        ([Cast(), Quantize(4)], "only one quantizer"),
        ([Quantize(8), TopK(0.01)], "sparsify before quantizing"),
        ([ErrorFeedback(Quantize(8)), ErrorFeedback(TopK(0.1))], "sparsify before quantizing"),
        ([TopK(0.01), RandomK(0.1)], "only one sparsify"),
        ([ErrorFeedback(TopK(0.01), Zstd()), Quantize(8)], "must be the last"),
    ],
)
def test_orders_that_cannot_be_inverted_are_refused(ts, why):
    with pytest.raises(ValueError, match=why):
        validate_order(ts)
