"""Near duplicates on real photographs (scikit-image's sample images) and on random hashes, through the
per-cluster dedup the job runs (`dedup_cluster`), with the embedding gate off: these rows have only pHashes."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.dedup.cluster import ClusterDedup, dedup_cluster
from curation.dedup.near import DEFAULT_RADIUS, hamming, near_pairs, phash_codes
from curation.schema import DupKind
from curation.stages.decode import phash64

data = pytest.importorskip("skimage.data")

# Natural photographs; textures (brick, grass) and text pages are another regime (see near.py).
PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "clock",
    "immunohistochemistry",
    "retina",
    "moon",
)


def _rows(keys, hashes, quality=None) -> pa.Table:
    """Rows as one k-means cluster holds them: distinct sha256s, so only pHashes can match."""
    n = len(keys)
    quality = [0.5] * n if quality is None else list(quality)
    return pa.table(
        {
            "key": pa.array(list(keys), pa.string()),
            "sha256": [f"sha-{k}" for k in keys],
            "phash": pa.array(np.asarray(hashes, dtype=np.uint64), pa.uint64()),
            "clip_score": pa.array(quality, pa.float32()),
            "cluster": pa.array([0] * n, pa.int32()),
        }
    )


PHASH_ONLY = ClusterDedup(near_radius=DEFAULT_RADIUS, near_min_cosine=-1.0, semantic=False)


def near_duplicate_decisions(keys, hashes, quality) -> pa.Table:
    return dedup_cluster(_rows(keys, hashes, quality), settings=PHASH_ONLY)


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _phash(data_bytes: bytes) -> int:
    return phash64(Image.open(io.BytesIO(data_bytes)).convert("RGB"))


def _variants(original: bytes) -> dict[str, bytes]:
    image = Image.open(io.BytesIO(original)).convert("RGB")
    w, h = image.size
    dw, dh = round(w * 0.03), round(h * 0.03)
    return {
        "resize_0.5": _jpeg(image.resize((w // 2, h // 2))),
        "resize_0.75": _jpeg(image.resize((w * 3 // 4, h * 3 // 4))),
        "jpeg_q30": _jpeg(image, quality=30),
        "crop_3pct_each_side": _jpeg(image.crop((dw, dh, w - dw, h - dh))),
        "crop_6pct_right": _jpeg(image.crop((0, 0, w - round(w * 0.06), h))),
    }


@pytest.fixture(scope="module")
def photo_rows():
    """(photo, variant, key, phash) for every photo and variant, keys unrelated to photo order."""
    images = {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS}
    images["motorcycle"] = Image.fromarray(data.stereo_motorcycle()[0]).convert("RGB")
    rows = []
    for name, image in images.items():
        original = _jpeg(image)
        rows.append((name, "original", _phash(original)))
        rows += [(name, variant, _phash(b)) for variant, b in _variants(original).items()]
    order = np.random.default_rng(0).permutation(len(rows))
    return [(photo, variant, f"img/{int(k):03d}", h) for (photo, variant, h), k in zip(rows, order)]


def test_codes_are_big_endian_bytes_of_the_hash():
    codes = phash_codes(np.array([0x0123456789ABCDEF], dtype=np.uint64))
    assert codes.dtype == np.uint8 and codes.shape == (1, 8)
    assert codes[0].tolist() == [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]
    assert hamming(np.uint64(0), np.array([0, 1, 3, 2**64 - 1], dtype=np.uint64)).tolist() == [0, 1, 2, 64]


@pytest.mark.parametrize("radius", [0, 5, DEFAULT_RADIUS])
def test_pairs_are_exactly_those_within_radius(radius):
    rng = np.random.default_rng(radius)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2)
    flips = rng.integers(radius - 1 if radius else 0, radius + 2, 300)  # around the boundary
    copies = base.copy()
    for i, f in enumerate(flips):
        for bit in rng.choice(64, size=f, replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    hashes = np.concatenate([base, copies])
    left, right = near_pairs(hashes, radius=radius)
    dist = hamming(hashes[:, None], hashes[None, :])
    i, j = np.triu_indices(len(hashes), 1)
    within = dist[i, j] <= radius
    assert set(zip(left.tolist(), right.tolist())) == set(zip(i[within].tolist(), j[within].tolist()))


def test_variants_of_real_photos_group_with_their_original_and_photos_stay_apart(photo_rows):
    keys = [key for _, _, key, _ in photo_rows]
    photo_of = {key: photo for photo, _, key, _ in photo_rows}
    hashes = np.array([h for *_, h in photo_rows], dtype=np.uint64)
    quality = np.random.default_rng(1).random(len(keys))
    out = near_duplicate_decisions(keys, hashes, quality)
    assert set(out.column("dup_kind").to_pylist()) == {DupKind.NEAR.value}
    survivor = dict(zip(keys, keys)) | dict(zip(out.column("key").to_pylist(), out.column("dup_of").to_pylist()))
    for key in keys:
        assert photo_of[survivor[key]] == photo_of[key], f"{key} ({photo_of[key]}) grouped with another photo"
    survivors = {photo_of[key]: survivor[key] for key in keys}
    assert all(survivor[key] == survivors[photo_of[key]] for key in keys), "a variant was not grouped"
    assert len(set(survivors.values())) == len(survivors)


def test_measured_distances_back_the_default_radius(photo_rows):
    original = {photo: h for photo, variant, _, h in photo_rows if variant == "original"}
    edits = [hamming(original[p], h)[0] for p, v, _, h in photo_rows if v in ("resize_0.5", "resize_0.75", "jpeg_q30")]
    crops = [hamming(original[p], h)[0] for p, v, _, h in photo_rows if v.startswith("crop")]
    distinct = [hamming(original[a], original[b])[0] for a in original for b in original if a < b]
    assert max(edits) <= 4  # resize and recompression barely move pHash
    assert max(crops) <= DEFAULT_RADIUS  # small crops do, up to the radius
    assert min(distinct) >= DEFAULT_RADIUS + 8  # a margin to distinct photos


def test_new_rows_match_old_rows_and_never_the_reverse(photo_rows):
    old = [(key, h) for photo, variant, key, h in photo_rows if variant == "original" and photo != "coffee"]
    new = [(key, h, photo) for photo, variant, key, h in photo_rows if variant != "original"]
    evals = _rows([k for k, _ in old], [h for _, h in old])
    settings = ClusterDedup(near_radius=DEFAULT_RADIUS, near_min_cosine=-1.0, semantic=False, eval_rows=evals)
    out = dedup_cluster(_rows([k for k, _, _ in new], [h for _, h, _ in new]), settings=settings)
    photo_of = {key: photo for photo, _, key, _ in photo_rows}
    decisions = out.to_pylist()
    matched = {d["key"]: d["dup_of"] for d in decisions if d["dup_kind"] == "eval"}
    for key, _, photo in new:
        if photo == "coffee":
            assert key not in matched  # its original is not in the old set
        else:
            assert photo_of[matched[key]] == photo
    # Coffee's variants, with no old original, then group among themselves (near), after the old rows had their turn.
    assert {d["dup_kind"] for d in decisions if d["key"] not in matched} == {"near"}
    assert not set(matched) & {k for k, _ in old}


def test_small_inputs():
    assert near_duplicate_decisions(["a"], np.array([1], dtype=np.uint64), [0.5]).num_rows == 0
    out = near_duplicate_decisions(["b", "a"], np.array([7, 7], dtype=np.uint64), [None, None])
    assert out.to_pylist() == [{"key": "b", "dup_of": "a", "dup_kind": "near"}]
