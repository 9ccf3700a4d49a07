"""Export sinks (curation/io/sinks) on a finished output built here, run in this process (no Ray):
webdataset tars the `webdataset` package iterates row for row, resized images, shards by rows and by
size, clip-retrieval's embedding files row-aligned with kept/, byte-identical reruns, S3, and the
Hugging Face features of kept/. tests/test_export_job.py runs the same on a real job, with Ray."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from curation.cli import main
from curation.config import ResizeConfig, load_config
from curation.errors import UserError
from curation.images import DecodedImage, decode_image
from curation.io import huggingface
from curation.io.commit import Location, parquet_buffer
from curation.io.readers import image_values, read_shard
from curation.io.sinks import ExportSettings, KeptFile, export, kept_files
from curation.io.sources import Shard, list_shards
from curation.io.tar import MTIME, tar_bytes
from curation.lab.synth import generate
from curation.manifest import read_shards, shards_table, write_shards
from curation.schema import conform, record_schema

DIM = 16


def _png_with_alpha() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (90, 40), (10, 200, 30, 128)).save(buf, "PNG")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (48, 64), 3).save(buf, "GIF")
    return buf.getvalue()


def _unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def _emb(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float16()), DIM)


def write_output(root: Path, rows_per_shard: list[int], seed: int = 0) -> dict[str, pa.Table]:
    """A finished output as a job leaves it (kept/ written as job.write_final_shard writes it, a manifest,
    _SUCCESS): kept rows with a synthetic world's JPEGs, one PNG with transparency, one GIF, and unit
    embeddings. Returns the kept tables by file name."""
    world = root.parent / f"{root.name}-world"
    generate(str(world), rows=sum(rows_per_shard) + 20, seed=seed, fmt="parquet", shard_size=500)
    images = [
        b
        for shard in list_shards(str(world))
        for b in read_shard(shard).column("image").to_pylist()
        if b is not None and isinstance(decode_image(b, size=32, max_pixels=1 << 26), DecodedImage)
    ]
    images[1], images[4] = _png_with_alpha(), _gif()
    rng = np.random.default_rng(seed)
    tables, results, at = {}, [], 0
    for s, n in enumerate(rows_per_shard):
        shard_id = f"{s:05d}"
        chunk = images[at : at + n]
        at += n
        sizes = [Image.open(io.BytesIO(b)).size for b in chunk]
        table = pa.table(
            {
                "key": [f"{shard_id}/{i:09d}" for i in range(n)],
                "source": [shard_id] * n,
                "url": [f"https://example.invalid/{shard_id}/{i}.jpg" for i in range(n)],
                "caption": [f"a picture number {i} of shard {s}" for i in range(n)],
                "image": pa.array(chunk, pa.binary()),
                "width": pa.array([w for w, _ in sizes], pa.int32()),
                "height": pa.array([h for _, h in sizes], pa.int32()),
                "sha256": [hashlib.sha256(b).hexdigest() for b in chunk],
                "phash": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64), pa.uint64()),
                "img_emb": _emb(_unit(rng, n)),
                "txt_emb": _emb(_unit(rng, n)),
                "clip_score": pa.array(rng.random(n), pa.float32()),
                "unsafe": pa.array(rng.random(n), pa.float32()),
                "lang": ["en"] * n,
                "pii": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
                "status": ["kept"] * n,
            }
        )
        table = conform(table, record_schema(DIM))
        tables[f"kept/part-{shard_id}.parquet"] = table
        data = parquet_buffer(huggingface.with_features(table), row_group_size=5)
        Location.of(str(root)).write_bytes(data, "kept", f"part-{shard_id}.parquet")
        results.append({"shard_id": shard_id, "kept": n, "rows": n, "rejected": 0, "reasons": {}})
        results[-1].update(kept_sha256=hashlib.sha256(data.to_pybytes()).hexdigest(), rejected_sha256="")
    shards = [
        Shard(shard_id=r["shard_id"], url=f"file:///in/{r['shard_id']}.tar", format="webdataset") for r in results
    ]
    shards_file = write_shards(Location.of(str(root)), shards_table(shards, results))
    manifest = {"shards_file": shards_file, "config": {"output": {"shard_rows": 8}}}
    (root / "_manifest.json").write_text(json.dumps(manifest))
    (root / "_SUCCESS").write_bytes(b"")
    return tables


def results_of(root: Path) -> list[dict]:
    """The per-shard entries of an output's manifest (its shard file)."""
    manifest = json.loads((root / "_manifest.json").read_text())
    return read_shards(Location.of(str(root)), manifest, columns=["shard_id", "kept"]).to_pylist()


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "out"
    root.mkdir()
    tables = write_output(root, [9, 0, 13, 4])
    files = kept_files(results_of(root))
    return root, files, pa.concat_tables(tables[f.name] for f in files)


def run_export(root: Path, files: list[KeptFile], fmt: str, to: Path | str, **settings) -> dict:
    return export(str(root), fmt, files, ExportSettings(**settings), to_url=str(to))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wds_samples(pattern: str) -> list[dict]:
    import webdataset as wds

    return list(wds.WebDataset(pattern, shardshuffle=False))


# ---- the tar writer ------------------------------------------------------------------------------------


def test_tars_are_deterministic_plain_files_without_owner():
    members = [("a.jpg", b"\xff\xd8\xff" + b"x" * 700), ("a.json", b"{}"), ("a.txt", b"caption")]
    data = tar_bytes(members)
    assert data == tar_bytes(members) and len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
        assert [(i.name, tar.extractfile(i).read()) for i in infos] == members
    assert {(i.mtime, i.mode, i.uid, i.gid, i.uname, i.gname, i.type) for i in infos} == {
        (MTIME, 0o444, 0, 0, "", "", tarfile.REGTYPE)
    }


# ---- webdataset -------------------------------------------------------------------------------------------


def test_webdataset_holds_exactly_the_kept_rows_in_order(output, tmp_path):
    root, files, kept = output
    summary = run_export(root, files, "webdataset", tmp_path / "wds", shard_rows=8)
    assert summary["samples"] == kept.num_rows == 26 and summary["shards"] == 4
    assert summary["pattern"] == f"{tmp_path / 'wds'}/{{00000..00003}}.tar"
    samples = wds_samples(summary["pattern"])
    rows = kept.to_pylist()
    assert [s["__key__"] for s in samples] == [f"{i // 8:05d}{i % 8:04d}" for i in range(26)]
    for sample, row in zip(samples, rows):
        meta = json.loads(sample["json"])
        assert sample["txt"].decode() == row["caption"] == meta["caption"]
        assert meta["curation_key"] == row["key"] and meta["key"] == sample["__key__"]
        assert meta["url"] == row["url"] and meta["sha256"] == row["sha256"] and meta["status"] == "success"
        assert (meta["original_width"], meta["original_height"]) == (row["width"], row["height"])
        assert meta["clip_score"] == pytest.approx(row["clip_score"], rel=1e-6) and meta["phash"] == row["phash"]
        assert not {"img_emb", "txt_emb", "image", "reject_reason", "dup_of"} & set(meta)
        image = next(sample[ext] for ext in ("jpg", "png", "webp") if ext in sample)
        if row["image"].startswith(b"GIF"):  # not a format trainers load: re-encoded as PNG, same pixels
            assert "png" in sample and (meta["width"], meta["height"]) == (row["width"], row["height"])
            assert np.array_equal(
                np.asarray(Image.open(io.BytesIO(image)).convert("RGB")),
                np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB")),
            )
        else:
            assert image == row["image"]  # the kept bytes, untouched
    for name in ("00000", "00003"):
        in_tar = [s for s in samples if s["__key__"].startswith(name)]
        stats = json.loads((tmp_path / "wds" / f"{name}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == len(in_tar)
    with tarfile.open(tmp_path / "wds" / "00000.tar") as tar:
        names = tar.getnames()
        assert names == sorted(names)  # samples in key order, each sample's members by name
        assert {(m.uname, m.gname, m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {("", "", 0, 0, MTIME)}


def test_metadata_parquet_matches_the_json_of_each_sample(output, tmp_path):
    root, files, _ = output
    run_export(root, files, "webdataset", tmp_path / "wds", shard_rows=100)
    samples = wds_samples(str(tmp_path / "wds" / "00000.tar"))
    table = pq.read_table(tmp_path / "wds" / "00000.parquet")
    assert table.column("key").to_pylist() == [s["__key__"] for s in samples]
    for row, sample in zip(table.to_pylist(), samples):
        meta = json.loads(sample["json"])
        assert list(row) == list(meta)
        for name, value in meta.items():
            assert row[name] == pytest.approx(value, rel=1e-6) if isinstance(value, float) else row[name] == value


def test_exports_are_byte_identical_across_runs(output, tmp_path):
    root, files, _ = output
    for fmt in ("webdataset", "embeddings"):
        run_export(root, files, fmt, tmp_path / f"{fmt}-1", shard_rows=8, shard_mb=0.02)
        run_export(root, files, fmt, tmp_path / f"{fmt}-2", shard_rows=8, shard_mb=0.02)
        first, second = tree_bytes(tmp_path / f"{fmt}-1"), tree_bytes(tmp_path / f"{fmt}-2")
        first.pop("_export.json"), second.pop("_export.json")  # names its own folder
        assert first == second and len(first) > 3


def test_shard_mb_closes_a_tar_before_it_passes_the_limit(output, tmp_path):
    root, files, kept = output
    limit = 0.03
    summary = run_export(root, files, "webdataset", tmp_path / "wds", shard_rows=1000, shard_mb=limit)
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    assert summary["shards"] == len(tars) > 2 and summary["bytes"] == sum(t.stat().st_size for t in tars)
    samples = wds_samples(summary["pattern"])
    assert [json.loads(s["json"])["curation_key"] for s in samples] == kept.column("key").to_pylist()
    for tar in tars:
        with tarfile.open(tar) as t:
            count = len(t.getnames()) // 3
        assert tar.stat().st_size <= limit * 1e6 or count == 1


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop", "border"])
def test_resize_changes_the_export_and_never_kept(output, tmp_path, mode):
    root, files, kept = output
    before = tree_bytes(root / "kept")
    resize = ResizeConfig(mode=mode, size=24, quality=90)
    run_export(root, files, "webdataset", tmp_path / "wds", resize=resize)
    assert tree_bytes(root / "kept") == before
    for sample, row in zip(wds_samples(str(tmp_path / "wds" / "00000.tar")), kept.to_pylist()):
        meta = json.loads(sample["json"])
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and image.size == (meta["width"], meta["height"])
        assert (meta["original_width"], meta["original_height"]) == (row["width"], row["height"])
        if mode == "keep_ratio":
            assert min(image.size) == 24
            assert abs(image.width / image.height - row["width"] / row["height"]) < 0.1
        else:
            assert image.size == (24, 24)


def test_an_export_replaces_its_own_files_and_refuses_other_folders(output, tmp_path):
    root, files, _ = output
    run_export(root, files, "webdataset", tmp_path / "wds", shard_rows=2)
    assert (tmp_path / "wds" / "00012.tar").exists()
    run_export(root, files, "webdataset", tmp_path / "wds", shard_rows=100)
    assert sorted(p.name for p in (tmp_path / "wds").iterdir()) == [
        "00000.parquet",
        "00000.tar",
        "00000_stats.json",
        "_export.json",
    ]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds files an export did not write"):
        run_export(root, files, "embeddings", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_load_with_numpy_row_aligned_with_kept(output, tmp_path):
    import faiss

    root, files, kept = output
    summary = run_export(root, files, "embeddings", tmp_path / "emb", shard_rows=5)
    out = tmp_path / "emb"
    names = sorted(p.name for p in (out / "img_emb").iterdir())
    assert names == [f"img_emb_{i}.npy" for i in range(6)] and summary["parts"] == 6 and summary["dim"] == DIM
    img = [np.load(out / "img_emb" / f"img_emb_{i}.npy") for i in range(6)]
    txt = [np.load(out / "text_emb" / f"text_emb_{i}.npy") for i in range(6)]
    meta = [pq.read_table(out / "metadata" / f"metadata_{i}.parquet") for i in range(6)]
    assert [len(a) for a in img] == [len(a) for a in txt] == [m.num_rows for m in meta] == [5, 5, 5, 5, 5, 1]
    assert img[0].dtype == np.float16
    by_key = {r["key"]: r for r in kept.to_pylist()}
    keys = [k for m in meta for k in m.column("key").to_pylist()]
    assert keys == kept.column("key").to_pylist()
    assert {"url", "caption", "clip_score"} <= set(meta[0].column_names)
    assert not {"image", "img_emb", "txt_emb", "status"} & set(meta[0].column_names)
    images, texts = np.concatenate(img), np.concatenate(txt)
    for i, key in enumerate(keys):
        assert np.array_equal(images[i], np.array(by_key[key]["img_emb"], np.float16))
        assert np.array_equal(texts[i], np.array(by_key[key]["txt_emb"], np.float16))
    index = faiss.IndexFlatIP(DIM)
    index.add(images.astype(np.float32))
    sample = np.random.default_rng(0).choice(len(keys), 10, replace=False)
    _, nearest = index.search(images[sample].astype(np.float32), 1)
    assert nearest[:, 0].tolist() == sample.tolist()


def test_clip_retrieval_pads_part_numbers_so_they_sort(output, tmp_path):
    root, files, _ = output
    run_export(root, files, "embeddings", tmp_path / "emb", shard_rows=2)
    names = sorted(p.name for p in (tmp_path / "emb" / "img_emb").iterdir())
    assert names[:2] == ["img_emb_00.npy", "img_emb_01.npy"] and names[-1] == "img_emb_12.npy"


# ---- Hugging Face datasets ----------------------------------------------------------------------------------


def test_datasets_reads_kept_images_as_pil_and_embeddings_as_arrays(output, tmp_path):
    import datasets

    root, _, kept = output
    files = sorted(str(p) for p in (root / "kept").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image) and ds.num_rows == kept.num_rows
    first = ds[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (
        kept["width"][0].as_py(),
        kept["height"][0].as_py(),
    )
    vectors = ds.with_format("numpy")[:3]["img_emb"]
    assert vectors.shape == (3, DIM) and np.array_equal(vectors[0], np.array(kept["img_emb"][0].as_py(), np.float16))
    assert pq.read_schema(files[0]).field("image").type == huggingface.IMAGE_TYPE
    assert image_values(pq.read_table(files[0]).column("image")).to_pylist() == kept["image"][:9].to_pylist()


def test_rejected_images_are_declared_undecoded(tmp_path):
    import datasets

    table = pa.table({"key": ["a"], "image": pa.array([b"not an image"], pa.binary()), "status": ["rejected"]})
    pq.write_table(huggingface.with_features(table, decode_images=False), tmp_path / "r.parquet")
    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "r.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds[0]["image"] == {"bytes": b"not an image", "path": None}


# ---- S3, the command line, the config ------------------------------------------------------------------------


def test_every_sink_writes_to_s3_the_same_bytes(output, s3_bucket, tmp_path):
    root, files, _ = output
    fs = fsspec.filesystem("s3")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{s3_bucket}/out/{path.relative_to(root)}")
    for fmt in ("webdataset", "embeddings"):
        summary = export(
            f"s3://{s3_bucket}/out", fmt, files, ExportSettings(shard_rows=8), to_url=f"s3://{s3_bucket}/{fmt}"
        )
        local = tree_bytes(Path(run_export(root, files, fmt, tmp_path / fmt, shard_rows=8)["url"]))
        fs.invalidate_cache()
        remote = {
            p.split(f"/{fmt}/", 1)[1]: fs.cat_file(p) for p in fs.find(f"{s3_bucket}/{fmt}") if not p.endswith(".json")
        }
        assert remote == {k: v for k, v in local.items() if not k.endswith(".json")}
        assert not [p for p in fs.find(f"{s3_bucket}/{fmt}") if "/.tmp-" in p]
    assert summary["url"] == f"s3://{s3_bucket}/embeddings"
    pattern = export(
        f"s3://{s3_bucket}/out", "webdataset", files, ExportSettings(shard_rows=100), to_url=f"s3://{s3_bucket}/w"
    )["pattern"]
    assert pattern == f"s3://{s3_bucket}/w/{{00000..00000}}.tar"


def test_export_command_line_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(tmp_path), "--format", "webdataset"])
    assert result.exit_code == 2 and "no finished output" in result.output
    result = runner.invoke(main, ["export", str(tmp_path), "--format", "webdataset", "--resize", "border"])
    assert result.exit_code == 2 and "--resize and --size go together" in result.output


def test_output_config_formats():
    cfg = load_config(None, ["output.formats=[parquet, webdataset]", "output.embeddings=npy"])
    assert cfg.output.formats == ("parquet", "webdataset") and cfg.output.embeddings == "npy"
    with pytest.raises(UserError, match="must include parquet"):
        load_config(None, ["output.formats=[webdataset]"])
    with pytest.raises(UserError, match="needs the images"):
        load_config(None, ["output.formats=[parquet, webdataset]", "output.keep_images=false"])
    with pytest.raises(UserError, match="output.resize.mode"):
        load_config(None, ["output.resize={mode: stretch, size: 64}"])


def test_rejected_rows_of_a_url_list_keep_no_bytes_and_rows_of_the_input_get_theirs(tmp_path):
    from curation.io.sinks.rejected_images import RejectedFile, write_file
    from curation.io.sources import Shard

    data = [_png_with_alpha(), b"\xff\xd8 not much of a jpeg"]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "caption": ["x y z"] * 2, "jpg": data}), tmp_path / "in" / "s.parquet")
    (tmp_path / "in" / "u.csv").write_text("url,caption\nhttps://example.com/a.png,x y z\n")
    out = Location.of(str(tmp_path / "out"))
    for shard_id, keys in (("s", ["s/a", "s/b"]), ("u", ["u/0"])):
        table = pa.table(
            {
                "key": keys,
                "image": pa.nulls(len(keys), pa.binary()),
                "sha256": [hashlib.sha256(data[i]).hexdigest() for i in range(len(keys))],
                "status": ["rejected"] * len(keys),
            }
        )
        part = huggingface.with_features(conform(table, record_schema(DIM)), decode_images=False)
        out.write_bytes(parquet_buffer(part), "rejected", f"part-{shard_id}.parquet")
    dest = Location.of(str(tmp_path / "rej"))
    shards = {s.shard_id: s for s in list_shards(str(tmp_path / "in"))}
    done = write_file(
        out, dest, RejectedFile(name="rejected/part-s.parquet", shard=shards["s"], max_shard_bytes=1 << 20)
    )
    assert (done["read_back"], done["without_bytes"]) == (2, 0)
    back = pq.read_table(tmp_path / "rej" / "part-s.parquet")
    assert image_values(back.column("image")).to_pylist() == data
    url_list = RejectedFile(
        name="rejected/part-u.parquet", shard=Shard(shard_id="u", url="x", format="urls"), max_shard_bytes=1
    )
    assert write_file(out, dest, url_list)["without_bytes"] == 1  # downloaded: its url names it
