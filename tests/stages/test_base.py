import pyarrow as pa

from curation.stages.base import binary_views


def values_of(array):
    ends, data = binary_views(array)
    return [bytes(data[ends[i] : ends[i + 1]]) for i in range(len(array))]


def test_binary_views_give_each_value_of_sliced_chunked_and_large_arrays():
    values = [b"abc", b"", b"\x00\xff", b"longer value", b"z"]
    array = pa.array(values, pa.binary())
    assert values_of(array) == values
    assert values_of(array.slice(2, 3)) == values[2:]  # offset 2 into the same buffers
    assert values_of(pa.chunked_array([array.slice(0, 2), array.slice(2)])) == values
    assert values_of(pa.array(values, pa.large_binary())) == values


def test_binary_views_of_nulls_and_of_nothing():
    ends, data = binary_views(pa.array([None, b"ab", None], pa.binary()))
    assert list(ends) == [0, 0, 2, 2] and bytes(data[0:2]) == b"ab"
    ends, data = binary_views(pa.array([], pa.binary()))
    assert list(ends) == [0]
