import pyarrow as pa
import pytest

from curation.stages.basic import BasicFilter


def batch(captions, sizes, status=None):
    n = len(captions)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "caption": captions,
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
            "status": status or ["kept"] * n,
            "reject_reason": [None] * n,
            "reject_stage": [None] * n,
        }
    )


@pytest.mark.parametrize(
    ("caption", "size", "reason"),
    [
        ("a red circle on blue", (64, 64), None),
        ("a b c", (64, 64), "caption_too_short"),  # 5 characters: DataComp wants more than 5
        ("two words!", (64, 64), "caption_too_few_words"),
        ("a red circle on blue", (64, 20), "image_too_small"),
        ("a red circle on blue", (400, 100), "extreme_aspect_ratio"),
        ("a red circle on blue", (96, 288), None),  # exactly 3 is allowed
        ("   padded   ", (64, 64), "caption_too_few_words"),
    ],
)
def test_datacomp_basic_rules(caption, size, reason):
    out = BasicFilter(min_short_side=32, max_aspect=3.0).process_batch(batch([caption], [size]))
    assert out.column("reject_reason").to_pylist() == [reason]
    assert out.column("reject_stage").to_pylist() == [None if reason is None else "basic"]


def test_rows_rejected_earlier_keep_their_first_reason():
    table = batch(["x"], [(1, 1)], status=["rejected"])
    table = table.set_column(table.column_names.index("reject_reason"), "reject_reason", pa.array(["not_an_image"]))
    out = BasicFilter().process_batch(table)
    assert out.column("reject_reason").to_pylist() == ["not_an_image"]


def test_laion_minimum_image_file_size():
    table = batch(["a red circle on blue"] * 3, [(64, 64)] * 3)
    table = table.append_column("image", pa.array([b"x" * 4999, b"x" * 5000, None], pa.binary()))
    out = BasicFilter(min_image_bytes=5000).process_batch(table)
    assert out.column("reject_reason").to_pylist() == ["image_too_few_bytes", None, "image_too_few_bytes"]
    assert BasicFilter().process_batch(table).column("reject_reason").to_pylist() == [None] * 3  # off by default
