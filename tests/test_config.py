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
