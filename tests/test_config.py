import pytest

from curation.config import Config, load_config
from curation.errors import UserError


def test_defaults_are_the_demo():
    cfg = load_config(None)
    assert cfg.model.arch == "curation-tiny"
    assert cfg.basic.min_caption_words == 3
    assert cfg == Config()


def test_demo_yaml_loads():
    cfg = load_config("pipelines/demo.yaml")
    assert cfg.dedup.exact is True


def test_overrides_parse_typed_values(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model:\n  batch_size: 64\n")
    cfg = load_config(path, ["model.batch_size=32", "clip.min_score=0.25", "output.keep_images=false"])
    assert cfg.model.batch_size == 32
    assert cfg.clip.min_score == 0.25
    assert cfg.output.keep_images is False


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "expected"),
    [
        ("model:\n  bach_size: 3\n", [], "unknown key model.bach_size (did you mean batch_size?)"),
        ("", ["modle.arch=x"], "unknown key modle"),
        ("", ["model.batch_size=-1"], "model.batch_size -1"),
        ("", ["basic.max_aspect=wide"], "basic.max_aspect 'wide'"),
        ("model: [1, 2\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("", ["nodots"], "write it as section.key=value"),
        ("", ["dedup.quality=caption"], "dedup.quality must be one of"),
    ],
)
def test_bad_config_gives_one_clear_line(tmp_path, yaml_text, overrides, expected):
    path = tmp_path / "job.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_config_file_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_digest_ignores_where_it_runs_but_not_what_it_does():
    base = load_config(None)
    assert base.digest() == load_config(None, ["run.num_cpus=1"]).digest()
    assert base.digest() != load_config(None, ["basic.min_short_side=64"]).digest()
