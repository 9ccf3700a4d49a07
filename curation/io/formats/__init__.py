"""Input formats as plug-ins: one module per format, each with

- `NAME`: the format's name (`input.format`, `Shard.format`);
- `detect(listing) -> list[str]`: the files of an input listing (sources.Listing) that are its shards;
- `read(shard, storage_options, budget) -> (samples, images)`: a shard's samples and their image bytes
  (None: the samples hold them), every sample kept or rejected with a reason (curation/io/readers.py);
- optionally `read_images(shard, storage_options, max_shard_bytes)`: only the image bytes, for the write
  phase (None: read the shard whole).

Adding a format is adding its module here, with its tests. FORMATS is the detection order.
"""

from curation.io.formats import hf_datasets, parquet, urls, webdataset

FORMATS = {module.NAME: module for module in (webdataset, parquet, urls, hf_datasets)}
