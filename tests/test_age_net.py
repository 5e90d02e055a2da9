"""The age network: model shapes and gradients, Mean-Teacher pieces against their formulas,
spatial splits, normalisation that keeps metres, metrics, calibration, configs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from age_net.config import get_age_cfg
from age_net.data import normalise_dem
from age_net.engine import ema_update, fit_temperature, label_subset, sigmoid_rampup, softmax_mse, spatial_split
from age_net.metrics import classification_metrics, expected_calibration_error
from age_net.model import AgeNet

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "age_net"
AGE_YAMLS = sorted(CONFIG_DIR.rglob("*.yaml"))
TINY_TRUNK = "test_resnet"  # timm's own tiny test model: same API as a ResNet, milliseconds per step


@pytest.mark.parametrize("mode,in_chans", [("both", 1), ("both", 2), ("image", 1), ("image", 2), ("attributes", 2)])
def test_forward_backward(mode, in_chans):
    torch.manual_seed(0)
    n_attr = 7
    net = AgeNet(mode=mode, trunk_name=TINY_TRUNK, in_chans=in_chans, num_attributes=n_attr)
    image = torch.randn(5, in_chans, 33, 33)  # odd size on purpose
    attrs = torch.cat([torch.randn(5, n_attr), (torch.rand(5, n_attr) < 0.2).float()], dim=1)
    logits = net(image, attrs)
    assert logits.shape == (5, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 4])).backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # Each branch present receives gradient; an absent one does not exist.
    assert (net.trunk is not None) == (mode != "attributes")
    assert (net.attributes is not None) == (mode != "image")
    if net.trunk is not None:
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("trunk."))
        first_conv = next(m for m in net.trunk.modules() if isinstance(m, torch.nn.Conv2d))
        assert first_conv.in_channels == in_chans
    if net.attributes is not None:
        assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("attributes."))


def test_forward_refuses_wrong_inputs():
    net = AgeNet(mode="both", trunk_name=TINY_TRUNK, in_chans=2, num_attributes=4)
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(2, 1, 32, 32), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="values \\+ missing mask"):
        net(torch.randn(2, 2, 32, 32), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs attributes"):
        AgeNet(mode="attributes", num_attributes=0)


def test_predict_proba_uses_the_temperature():
    torch.manual_seed(0)
    net = AgeNet(mode="attributes", num_attributes=3).eval()
    a = torch.randn(4, 6)
    logits = net(None, a)
    net.temperature.fill_(2.5)
    p = net.predict_proba(None, a)
    assert torch.allclose(p, torch.softmax(logits / 2.5, dim=1), atol=1e-6)
    assert torch.allclose(p.sum(dim=1), torch.ones(4), atol=1e-6)
    assert "temperature" in net.state_dict()  # travels with the weights


def test_ema_update_matches_its_formula():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    alpha = ema_update(teacher, student, decay=0.99, step=1000)
    assert alpha == 0.99
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.99 * t0 + 0.01 * s, atol=1e-7)
    # The first step copies the student (alpha = min(decay, 1 - 1/(step + 1)) = 0), step 3 uses 0.75.
    assert ema_update(teacher, student, decay=0.99, step=0) == 0.0
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)
    assert ema_update(teacher, student, decay=0.99, step=3) == pytest.approx(0.75)


def test_ema_decay_rises_after_the_rampup_when_asked():
    from types import SimpleNamespace

    from age_net.config import get_age_cfg
    from age_net.engine import AgeTrainer

    cfg = get_age_cfg(None, ["MEAN_TEACHER.RAMPUP_ITERS", "100", "MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP", "0.999"])
    trainer = SimpleNamespace(cfg=cfg)
    assert AgeTrainer.ema_decay(trainer, 99) == 0.99 and AgeTrainer.ema_decay(trainer, 100) == 0.999
    cfg = get_age_cfg(None, ["MEAN_TEACHER.RAMPUP_ITERS", "100"])  # default: one decay throughout
    assert AgeTrainer.ema_decay(SimpleNamespace(cfg=cfg), 5000) == 0.99
    with pytest.raises(ValueError, match="EMA_DECAY_AFTER_RAMPUP"):
        get_age_cfg(None, ["MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP", "1.5"])


def test_sigmoid_rampup_and_consistency_loss():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(10_000, 100) == 1.0
    s = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.zeros(1, 5, requires_grad=True)
    loss = softmax_mse(s, t)
    ps = torch.softmax(s, 1).detach()
    assert loss.detach().item() == pytest.approx(float(((ps - 0.2) ** 2).sum() / 5))
    loss.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0  # the teacher gets no gradient
    assert softmax_mse(s, s.detach()).item() == 0.0


def test_spatial_split_keeps_blocks_whole():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-3, 3, 2000), rng.uniform(-3, 3, 2000)
    where = spatial_split(lon, lat, block_deg=1.0, val_fraction=0.15, test_fraction=0.25, seed=1)
    blocks = np.floor(lon) * 1000 + np.floor(lat)
    for b in np.unique(blocks):
        assert len(set(where[blocks == b])) == 1, "a block was split between train/val/test"
    share = {s: np.mean(where == s) for s in ("train", "val", "test")}
    assert 0.2 <= share["test"] <= 0.4 and 0.1 <= share["val"] <= 0.3 and share["train"] >= 0.4
    again = spatial_split(lon, lat, block_deg=1.0, val_fraction=0.15, test_fraction=0.25, seed=1)
    other = spatial_split(lon, lat, block_deg=1.0, val_fraction=0.15, test_fraction=0.25, seed=2)
    assert (again == where).all() and (other != where).any()


def test_label_subset_keeps_every_class():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 45)
    idx = label_subset(labels, np.arange(100), 0.1, seed=0)
    assert sorted(np.bincount(labels[idx]).tolist()) == [1, 5, 5]
    assert len(set(idx.tolist())) == len(idx)


def test_dem_normalisation_keeps_metres():
    size, k = 32, 3.0
    offsets = np.arange(size) + 0.5 - size / 2
    r = np.hypot(offsets[None, :], offsets[:, None]) / (size / (2 * k))
    bowl = np.where(r < 1, -(1 - r ** 2), 0.0)
    crops = np.stack([1234.0 + 400 * bowl, -2000.0 + 200 * bowl]).astype(np.float32)  # deep and shallow
    z = normalise_dem(crops, size, k, scale_m=500.0, ring_inner_radii=2.2)
    # Deepest pixel below the surroundings, in units of 500 m, whatever the absolute elevation:
    assert z[0].min() == pytest.approx(400 * bowl.min() / 500, abs=1e-4)
    assert z[1].min() == pytest.approx(200 * bowl.min() / 500, abs=1e-4)
    assert bowl.min() < -0.9
    assert np.abs(z[:, r > 2.2]).max() < 1e-3


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    probs = np.eye(5)[[0, 1, 1, 1, 2]] * 0.96 + 0.01
    m = classification_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["recall"]["pNc"] == 0.5 and m["recall"]["Nc"] == 1.0 and m["recall"]["Ic"] == 1.0
    assert math.isnan(m["recall"]["Cc"])
    # F1: pNc 2*1*0.5/1.5, Nc 2*(2/3)*1/(5/3), Ic 1; macro over the classes present
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert m["confusion"][0] == [1, 1, 0, 0, 0]
    assert m["ece"] == pytest.approx(abs(0.8 - 0.97))


def test_ece_of_a_calibrated_predictor_is_small():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20000, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert expected_calibration_error(y, p) < 0.02
    over = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    assert expected_calibration_error(y, over) > 0.1


def test_temperature_scaling_recovers_the_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5000, 5)) * 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(3.0 * z, y) == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize("path", AGE_YAMLS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_age_net_yaml_loads_and_builds(path):
    cfg = get_age_cfg(str(path), ["MODEL.DEVICE", "cpu"])
    net = AgeNet.from_config(cfg, num_attributes=6)
    s = cfg.INPUT.SIZE_PX
    with torch.no_grad():
        out = net.eval()(torch.randn(2, len(cfg.MODEL.IMAGE_CHANNELS), s, s), torch.zeros(2, 12))
    assert out.shape == (2, 5)


def test_config_rejects_unknown_values():
    with pytest.raises(ValueError, match="MODEL.MODE"):
        get_age_cfg(None, ["MODEL.MODE", "video"])
    with pytest.raises(ValueError, match="IMAGE_CHANNELS"):
        get_age_cfg(None, ["MODEL.IMAGE_CHANNELS", "['slope']"])
    with pytest.raises(AssertionError, match="Non-existent key"):  # yacs' way of refusing a typo
        get_age_cfg(None, ["SOLVER.NOT_A_KEY", "1"])


@pytest.mark.parametrize("path", [p for p in AGE_YAMLS if p.name != "Base-AgeNet.yaml"],
                         ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_age_net_leaf_sits_on_the_base_and_states_only_what_differs(path):
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert (path.parent / raw.pop("_BASE_")).resolve() == CONFIG_DIR / "Base-AgeNet.yaml"
    from age_net.config import get_age_cfg_defaults

    base = get_age_cfg_defaults()  # unresolved: MODEL.DEVICE stays "auto"
    base.merge_from_file(str(CONFIG_DIR / "Base-AgeNet.yaml"))

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, value in walk(raw):
        node = base
        for part in key.split("."):
            node = node[part]
        assert node != value, f"{path.name}: {key} restates the base's value {value!r}"


def test_metric_figures_are_written(tmp_path):
    """Confusion matrix and reliability diagram land as PNGs where asked (folders made)."""
    from PIL import Image

    from age_net.metrics import plot_confusion, plot_reliability

    y = np.array([0, 1, 2, 3, 4, 4])
    probs = np.eye(5)[[0, 1, 2, 3, 3, 4]] * 0.8 + 0.04
    cm_png = plot_confusion(np.eye(5, dtype=int) * 3, tmp_path / "a" / "cm.png")
    rel_png = plot_reliability(y, probs, tmp_path / "b" / "rel.png")
    for png in (cm_png, rel_png):
        with Image.open(png) as im:
            assert im.format == "PNG" and min(im.size) > 100


def test_age_net_reads_catalogues_through_the_one_reader(tmp_path):
    """Labelled and unlabelled rows of one table (empty age = unlabelled), problems by row and field."""
    from age_net.data import encode_labels
    from age_net.engine import _read_craters
    from etl.catalogue import CatalogueError

    path = tmp_path / "dated.csv"
    path.write_text("lon,lat,diameter_km,age_class,unit\n10,20,5,Ec,maria\n11,21,6,,highlands\n350,22,7,Nc,highlands\n")
    df = _read_craters(path)
    assert df.lon.tolist() == [10.0, 11.0, -10.0]  # normalised by the reader
    assert encode_labels(df.age_class.tolist()).tolist() == [3, -1, 1]
    assert df.unit.tolist() == ["maria", "highlands", "highlands"]
    df.to_parquet(tmp_path / "dated.parquet")
    assert encode_labels(_read_craters(tmp_path / "dated.parquet").age_class.tolist()).tolist() == [3, -1, 1]
    (tmp_path / "bad.csv").write_text("lon,lat,diameter_km,age_class\n10,20,-5,Ec\n11,95,6,Nc\n")
    with pytest.raises(CatalogueError) as exc:
        _read_craters(tmp_path / "bad.csv")
    assert "row 1" in str(exc.value) and "diameter_km" in str(exc.value) and "row 2" in str(exc.value)
