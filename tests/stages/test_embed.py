import numpy as np
import pyarrow as pa
import pytest

from curation.config import ModelConfig
from curation.models.clip import model_info
from curation.stages.embed import EmbedStage


@pytest.fixture(scope="module")
def stage():
    cfg = ModelConfig(batch_size=3, threads=1)
    info = model_info(cfg)
    stage = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim)
    stage.setup()
    return stage


def batch(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, size * size * 3, dtype=np.uint8).tobytes() for _ in range(n)]
    status = ["kept"] * n
    status[1] = "rejected"
    pixels[1] = None
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "caption": [f"a photo of {i} red circles" for i in range(n)],
            "pixels": pa.array(pixels, pa.binary()),
            "status": status,
        }
    )


def test_embeds_kept_rows_with_normalised_vectors(stage):
    out = stage.process_batch(batch(7))
    assert "pixels" not in out.column_names
    img = out.column("img_emb").to_pylist()
    txt = out.column("txt_emb").to_pylist()
    scores = out.column("clip_score").to_pylist()
    assert img[1] is None and txt[1] is None and scores[1] is None
    for i in (0, 2, 6):
        a, b = np.array(img[i], np.float32), np.array(txt[i], np.float32)
        assert a.shape == (128,)
        assert abs(np.linalg.norm(a) - 1) < 1e-2 and abs(np.linalg.norm(b) - 1) < 1e-2
        assert abs(float(a @ b) - scores[i]) < 1e-2


def test_same_input_gives_the_same_scores(stage):
    first = stage.process_batch(batch(7)).column("clip_score").to_pylist()
    again = stage.process_batch(batch(7)).column("clip_score").to_pylist()
    assert first == again


def test_random_init_is_seeded():
    cfg = ModelConfig(threads=1)
    info = model_info(cfg)
    a = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim)
    b = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim)
    assert (
        a.process_batch(batch(3)).column("img_emb").to_pylist()
        == b.process_batch(batch(3)).column("img_emb").to_pylist()
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_cpu_is_close_to_fp32(stage, precision):
    import torch

    from curation.models.clip import autocast_dtype

    cfg = ModelConfig(batch_size=3, threads=1, precision=precision, device="cpu")
    assert autocast_dtype(cfg, torch.device("cpu")) == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    info = model_info(cfg)
    low = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim)
    full = stage.process_batch(batch(5))
    reduced = low.process_batch(batch(5))
    for column in ("img_emb", "txt_emb"):
        for a, b in zip(full.column(column).to_pylist(), reduced.column(column).to_pylist()):
            if a is None:
                assert b is None
                continue
            a, b = np.array(a, np.float32), np.array(b, np.float32)
            assert abs(np.linalg.norm(b) - 1) < 2e-2
            assert float(a @ b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.98
    assert low._clip.amp_dtype is not None and stage._clip.amp_dtype is None  # auto on CPU: full fp32


def test_auto_precision_is_fp32_on_cpu_and_bf16_on_cuda():
    import torch

    from curation.models.clip import autocast_dtype

    auto = ModelConfig()
    assert autocast_dtype(auto, torch.device("cpu")) is None
    assert autocast_dtype(auto, torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(ModelConfig(precision="fp32"), torch.device("cuda")) is None


def test_calls_from_several_threads_at_once_give_what_one_call_gives():
    """An embedding actor works on several shards at once: the heads read patch tokens and stem
    responses of each call's own forward pass, never another thread's."""
    from concurrent.futures import ThreadPoolExecutor

    from curation.config import Config

    cfg = ModelConfig(batch_size=4, threads=1)
    info = model_info(cfg)
    stage = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim, heads=Config().heads)
    stage.setup()
    assert stage._encoder.tokens  # the shipped heads read tokens and stem: the path at risk
    batches = [batch(9, seed=seed) for seed in range(6)]
    columns = ["img_emb", "clip_score", "unsafe", "watermark", "aesthetic"]
    alone = [stage.process_batch(b).select(columns) for b in batches]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(stage.process_batch, batches * 2))
    for expected, got in zip(alone * 2, together):
        assert got.select(columns).equals(expected)


def test_feature_encoder_gives_what_encode_image_features_gives():
    import torch

    from curation.models.clip import load_clip
    from curation.models.heads import ImageFeatureEncoder, encode_image_features

    cfg = ModelConfig(threads=1)
    images = torch.rand(5, 3, 64, 64)
    reference = load_clip(cfg).model
    with torch.inference_mode():
        expected = encode_image_features(reference, images, tokens=True)
        assert reference.visual.output_tokens is False  # switched for that pass only
        got = ImageFeatureEncoder(load_clip(cfg).model, tokens=True)(images)
        plain = ImageFeatureEncoder(load_clip(cfg).model, tokens=False)(images)
    for name in ("embedding", "tokens", "stem"):
        assert torch.allclose(getattr(got, name), getattr(expected, name), atol=1e-5), name
    assert torch.allclose(plain.embedding, expected.embedding, atol=1e-5) and plain.tokens is None


def test_pixels_in_several_chunks_embed_as_one_contiguous_column(stage, recwarn):
    """Pixels are read where Arrow holds them (micro-batches of 3 here cross the chunk boundaries),
    into tensors of their own: no warning about tensors over read-only memory."""
    whole = batch(9, seed=4)
    pieces = pa.concat_tables([whole.slice(0, 4), whole.slice(4, 2), whole.slice(6)])  # three chunks
    assert pieces.column("pixels").num_chunks == 3
    reference = stage.process_batch(whole).column("img_emb").to_pylist()
    assert stage.process_batch(pieces).column("img_emb").to_pylist() == reference
    assert not [w for w in recwarn.list if "not writable" in str(w.message)]
