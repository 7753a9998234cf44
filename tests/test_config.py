import pytest

from aerialct.config import ExperimentConfig, config_from_dict, load_config, to_dict
from aerialct.errors import ConfigError


def test_defaults_follow_the_ct_paper():
    cfg = load_config(None)
    assert cfg.train.lr == pytest.approx(8e-5)
    assert cfg.train.batch_size == 32
    assert cfg.train.epochs == 50
    assert cfg.train.grad_clip == 1.0


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lrate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train.lrate.*train.lr"):
        load_config(p)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train.batch_size.*integer"):
        load_config(None, ["train.batch_size=abc"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=true", r"^train\.epochs: expected an integer, got true \(default: 50\)$"),
        ("train.epochs=5.5", r"^train\.epochs: expected an integer, got 5\.5"),
        ("data.hflip=1", r"^data\.hflip: expected true or false, got 1 \(default: true\)$"),
        ("name=123", r"^name: expected a string, got 123"),
        ("train.epochs=null", r"^train\.epochs: expected an integer, got null"),
        (
            "loss.contrast=ct-c",
            r"^loss\.contrast: 'ct-c' is not one of 'none', .*did you mean 'ct-cl'\?$",
        ),
        ("loss.mscs_anchors=per-clas", r"is not one of 'per-class', 'per-image-class', null"),
        (
            "loss.cs_pairs=[[4, 8, 16]]",
            r"^loss\.cs_pairs\[0\]: expected 2 values \(tuple\[int, int\]\)",
        ),
        ("loss.cs_pairs=[[4, x]]", r"^loss\.cs_pairs\[0\]\[1\]: expected an integer, got 'x'$"),
        ("data.scale_range=[1]", r"^data\.scale_range: expected 2 values"),
        ("loss.cs_pairs=3", r"got 3 \(default: \[\[4, 32\], \[4, 16\]\]\)$"),
        ("model=3", r"^model: expected a mapping of keys, got 3$"),
        ("modle.decoder=fpn", r"^unknown config key 'modle'; did you mean 'model'\?$"),
        ("zzz=1", r"^unknown config key 'zzz'; valid keys: name, model, loss, data, train$"),
    ],
)
def test_config_errors_name_the_key_the_value_and_what_is_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_error_is_counted_and_numbers_read_as_yaml_1_2():
    with pytest.raises(ConfigError, match=r"\(and 1 more\)$"):
        load_config(None, ["train.epochs=x", "train.batch_size=y"])
    cfg = load_config(None, ["train.lr=1e-4", "data.scale_range=[0.5, 2]", "train.epochs=3"])
    assert cfg.train.lr == 1e-4 and cfg.data.scale_range == (0.5, 2.0) and cfg.train.epochs == 3
    assert load_config(
        None, ["model.backbone_kwargs.drop_path_rate=1e-1"]
    ).model.backbone_kwargs == {"drop_path_rate": 0.1}


def test_overrides_and_base(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n  lr: 0.001\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 5\n")
    cfg = load_config(tmp_path / "child.yaml", ["loss.contrast=ct-cl", "loss.cs_pairs=[[4, 8]]"])
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.001
    assert cfg.loss.contrast == "ct-cl"
    assert cfg.loss.cs_pairs == ((4, 8),)


def test_roundtrip():
    cfg = load_config(None, ["model.decoder=fpn"])
    again = config_from_dict(to_dict(cfg))
    assert isinstance(again, ExperimentConfig)
    assert to_dict(again) == to_dict(cfg)


def test_presets_resolve_by_name_and_every_preset_loads():
    from aerialct.config import PRESETS_DIR, resolve_config_path

    assert resolve_config_path("tiny-cpu") == PRESETS_DIR / "tiny-cpu.yaml"
    with pytest.raises(ConfigError, match="dcswin-ct-cl"):
        resolve_config_path("dcswin-ct-c")
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert len(names) >= 17
    for name in names:
        cfg = load_config(resolve_config_path(name))
        assert cfg.name == name
    assert load_config(resolve_config_path("poolformer")).model.decoder == "dcswin"
