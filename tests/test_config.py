import math

import pytest

from sdeformer import ShapedConfig


def test_defaults_and_derived():
    cfg = ShapedConfig()
    assert math.isclose(cfg.lam**2 + cfg.gamma**2, 1.0)
    assert cfg.blocks == ("attention", "mlp")
    assert cfg.n_k(64) == 64 and cfg.n_h(64) == 64
    assert ShapedConfig(key_width=5).n_k(64) == 5
    assert ShapedConfig(key_ratio=0.25).n_k(64) == 16
    assert ShapedConfig(mlp_ratio=2).n_h(10) == 20
    assert hash(cfg) == hash(ShapedConfig())
    assert ShapedConfig.from_dict(cfg.to_dict()) == cfg
    assert ShapedConfig(blocks=["mlp"]).blocks == ("mlp",)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"tau0": 0.0}, "tau0=0.0"),
        ({"tau0": -1.0}, "must be > 0"),
        ({"tau0": float("nan")}, "finite"),
        ({"gamma": 0.0}, "0 < gamma < 1"),
        ({"gamma": 1.0}, "gamma=1.0"),
        ({"gamma": 1.5}, "lam = sqrt(1 - gamma^2)"),
        ({"gamma": "0.5"}, "real number"),
        ({"c_plus": float("inf")}, "c_plus"),
        ({"heads": 0}, "heads=0"),
        ({"heads": 1.5}, "integer >= 1"),
        ({"key_width": 0}, "key_width=0"),
        ({"key_width": 4, "key_ratio": 0.5}, "not both"),
        ({"key_ratio": -0.5}, "key_ratio=-0.5"),
        ({"mlp_ratio": 0}, "mlp_ratio=0"),
        ({"out_proj": 1}, "True or False"),
        ({"causal": "yes"}, "causal='yes'"),
        ({"blocks": ("attention", "mlpp")}, "unknown block 'mlpp'"),
        ({"blocks": ()}, "at least one block"),
    ],
)
def test_bad_values_name_value_and_fix(kwargs, fragment):
    with pytest.raises(ValueError, match="ShapedConfig") as info:
        ShapedConfig(**kwargs)
    assert fragment in str(info.value)


def test_frozen_and_unknown_fields():
    cfg = ShapedConfig()
    with pytest.raises(AttributeError):
        cfg.tau0 = 2.0
    with pytest.raises(ValueError, match="unknown field"):
        ShapedConfig.from_dict({"tau": 1.0})
    with pytest.raises(ValueError, match="tau0"):
        cfg.replace(tau0=-2.0)
