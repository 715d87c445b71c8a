import numpy as np
import torch

from nnrecipe.data.bundle import LazySplit, TensorSplit
from nnrecipe.probes.data_groups import measure, robust_z, tail_scales
from nnrecipe.probes.data_scan import DataScan, scan_split
from nnrecipe.tasks import CLASSIFICATION


def test_statistics_match_numpy():
    x = torch.randn(50, 3, 4, 4)
    s = scan_split(TensorSplit("train", x, torch.arange(50) % 2), batch_size=7)
    flat = x.reshape(50, -1).double().numpy()
    assert np.allclose(s.stats["mean"], flat.mean(1)) and np.allclose(s.stats["std"], flat.std(1))
    assert np.allclose(s.stats["l2"], np.linalg.norm(flat, axis=1))
    per_channel = x.permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    assert np.allclose(s.channel_mean, per_channel.mean(1)) and np.allclose(s.channel_std, per_channel.std(1))
    assert s.shapes == {(3, 4, 4): 50} and s.x_dtype == "float32" and s.y_dtype == "int64"


def test_lazy_and_tensor_splits_scan_alike():
    x, y = torch.randn(40, 5), torch.arange(40) % 3
    a = scan_split(TensorSplit("train", x, y))
    b = scan_split(LazySplit("train", torch.utils.data.TensorDataset(x, y)), batch_size=6)
    assert np.array_equal(a.hashes, b.hashes) and np.allclose(a.stats["l2"], b.stats["l2"])


def test_hashes_find_every_duplicate_among_100k():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, 3, 8, 8, generator=g)
    x[99_000:] = x[:1000]  # 1000 exact copies
    s = scan_split(TensorSplit("train", x, torch.zeros(100_000, dtype=torch.long)), batch_size=4096)
    val = scan_split(TensorSplit("val", x[5000:5010].clone(), torch.zeros(10, dtype=torch.long)))
    m = measure(
        DataScan(task=CLASSIFICATION, kind="image", num_classes=2, class_names=None, splits={"train": s, "val": val})
    )
    assert m.train_extra_copies == 1000 and m.train_dup_groups == 1000 and m.largest_dup_group == 2
    assert len(m.leaked["val"]) == 10


def test_one_different_bit_is_a_different_example():
    x = torch.zeros(2, 4)
    x[1, 3] = 1e-45  # the smallest subnormal float32
    s = scan_split(TensorSplit("train", x, torch.zeros(2, dtype=torch.long)))
    assert s.hashes[0] != s.hashes[1]


def test_tail_scales_match_the_normal_z_and_widen_for_heavy_tails():
    v = np.random.default_rng(0).normal(5.0, 2.0, size=200_000)
    med, lo, hi = tail_scales(v)
    assert abs(med - 5) < 0.02 and abs(lo - 2) < 0.05 and abs(hi - 2) < 0.05
    heavy = np.random.default_rng(0).lognormal(size=200_000)
    med, lo, hi = tail_scales(heavy)
    assert hi > 3 * lo  # the long right tail gets its own, wider scale
    z = robust_z(np.array([med, 1000.0]), med, lo, hi)
    assert z[0] == 0 and z[1] > 50


def test_constant_statistic_makes_any_deviation_extreme():
    v = np.zeros(1000)
    med, lo, hi = tail_scales(v)
    assert robust_z(np.array([1.0]), med, lo, hi)[0] > 1e6
