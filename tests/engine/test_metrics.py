"""Confusion-matrix accumulation and the metrics computed from it, against matrices worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from mdseg.errors import ClassValueError
from mdseg.metrics import ConfusionMatrix, all_reduce, compute_metrics, metrics_dict

# Rows = label, columns = prediction.
#            pred 0  1  2     label total
HAND = np.array(
    [
        [5, 1, 0],  # 6
        [2, 3, 1],  # 6
        [0, 1, 7],  # 8
    ]
)  # pred totals 7, 5, 8; N = 20
# IoU_k = tp / (label + pred − tp): 5/(6+7−5) = 5/8, 3/(6+5−3) = 3/8, 7/(8+8−7) = 7/9; mIoU = (1 + 7/9)/3 = 16/27.
# Acc_k = recall = tp / label: 5/6, 3/6, 7/8.   precision = tp / pred: 5/7, 3/5, 7/8.
# F1_k = 2 tp / (label + pred): 10/13, 6/11, 14/16.
# OA = (5 + 3 + 7)/20 = 3/4.  Chance pe = (6·7 + 6·5 + 8·8)/20² = 136/400 = 0.34.
# kappa = (0.75 − 0.34)/(1 − 0.34) = 0.41/0.66 = 41/66.


def test_metrics_of_a_hand_computed_three_class_matrix():
    m = compute_metrics(HAND)
    np.testing.assert_allclose(m.iou, [5 / 8, 3 / 8, 7 / 9])
    np.testing.assert_allclose(m.acc, [5 / 6, 3 / 6, 7 / 8])
    np.testing.assert_allclose(m.recall, m.acc)
    np.testing.assert_allclose(m.precision, [5 / 7, 3 / 5, 7 / 8])
    np.testing.assert_allclose(m.f1, [10 / 13, 6 / 11, 14 / 16])
    assert m.miou == pytest.approx(16 / 27)
    assert m.macc == pytest.approx((5 / 6 + 3 / 6 + 7 / 8) / 3)
    assert m.mf1 == pytest.approx((10 / 13 + 6 / 11 + 14 / 16) / 3)
    assert m.oa == pytest.approx(3 / 4)
    assert m.kappa == pytest.approx(41 / 66)
    assert not m.absent.any()


def test_a_class_absent_from_label_and_prediction_is_nan_and_left_out_of_the_means():
    padded = np.zeros((4, 4), dtype=np.int64)
    padded[:3, :3] = HAND
    m = compute_metrics(padded)
    assert m.absent.tolist() == [False, False, False, True]
    for values in (m.iou, m.acc, m.f1, m.precision, m.recall):
        assert math.isnan(values[3])
    # Same means, OA and kappa as without the empty class.
    assert m.miou == pytest.approx(16 / 27)
    assert m.oa == pytest.approx(3 / 4)
    assert m.kappa == pytest.approx(41 / 66)
    d = metrics_dict(m, ["a", "b", "c", "d"])
    assert d["absent_classes"] == ["d"]
    assert d["per_class"][3] == {"name": "d", "iou": None, "acc": None, "f1": None, "precision": None, "recall": None}


def test_a_class_in_the_label_but_never_predicted_counts_zero_iou_and_f1_and_nan_precision():
    # label 0: 4 pixels, all predicted 1; label 1: 2 pixels predicted 1.
    m = compute_metrics(np.array([[0, 4], [0, 2]]))
    assert m.iou.tolist() == [0.0, pytest.approx(2 / 6)]
    assert m.f1.tolist() == [0.0, pytest.approx(4 / 8)]
    assert math.isnan(m.precision[0])
    assert m.miou == pytest.approx(1 / 6)  # the missed class counts
    assert m.absent.tolist() == [False, False]


def test_a_class_only_predicted_has_nan_acc_excluded_from_macc_but_zero_iou_in_miou():
    # label is all class 0 (3 px); one of them predicted as class 1.
    m = compute_metrics(np.array([[2, 1], [0, 0]]))
    assert math.isnan(m.acc[1])
    assert m.macc == pytest.approx(2 / 3)
    assert m.iou[1] == 0.0
    assert m.miou == pytest.approx((2 / 3 + 0) / 2)


def test_kappa_is_zero_for_chance_agreement_and_one_for_perfect_agreement():
    # Rows and columns independent: po = pe.
    assert compute_metrics(np.array([[1, 1], [1, 1]])).kappa == pytest.approx(0.0)
    assert compute_metrics(np.diag([3, 5, 2])).kappa == pytest.approx(1.0)


def test_an_empty_matrix_gives_nan_metrics():
    m = compute_metrics(np.zeros((3, 3), dtype=np.int64))
    assert all(math.isnan(v) for v in (m.miou, m.macc, m.mf1, m.oa, m.kappa))
    assert m.absent.all()


def test_update_counts_label_rows_and_prediction_columns_and_skips_ignore_and_invalid():
    label = np.array([[0, 0, 1], [2, 255, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 0]])
    valid = np.array([[True, True, True], [False, True, True]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(label, pred, valid)
    # (label 2 invalid, label 255 ignored): (0,0), (0,1), (1,1), (1,0)
    assert cm.matrix.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert cm.matrix.dtype == np.int64
    assert cm.total == 4


def test_ignored_pixels_may_hold_any_prediction():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([255, 1]), np.array([200, 1]))
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]


@pytest.mark.parametrize(("label", "pred", "role"), [([0, 10], [0, 1], "label"), ([0, 1], [0, 7], "prediction")])
def test_values_that_are_not_classes_are_refused_naming_the_side(label, pred, role):
    cm = ConfusionMatrix(3)
    with pytest.raises(ClassValueError, match=rf"{role} values \[\d+\]") as caught:
        cm.update(np.array(label), np.array(pred))
    assert caught.value.role == role


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 6),
    n=st.integers(0, 200),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_summing_the_matrices_of_parts_equals_the_matrix_of_the_whole(k, n, cuts, seed):
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(n) < 0.1, 255, rng.integers(0, k, n))
    pred = rng.integers(0, k, n)
    valid = rng.random(n) < 0.9
    whole = ConfusionMatrix(k)
    whole.update(label, pred, valid)
    total = ConfusionMatrix(k)
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = ConfusionMatrix(k)
        part.update(label[a:b], pred[a:b], valid[a:b])
        total += part
    np.testing.assert_array_equal(total.matrix, whole.matrix)
    assert (ConfusionMatrix(k) + whole).matrix.tolist() == whole.matrix.tolist()


def test_matrices_of_different_class_counts_do_not_add():
    with pytest.raises(ValueError, match="3 and 4 classes"):
        ConfusionMatrix(3) + ConfusionMatrix(4)


def test_all_reduce_without_distributed_returns_the_matrix_unchanged():
    cm = ConfusionMatrix(3, matrix=HAND.copy())
    assert not dist.is_initialized()
    assert all_reduce(cm) is cm


def test_all_reduce_in_a_one_process_gloo_group_keeps_exact_int64_counts(tmp_path):
    big = np.array([[2**40 + 1, 3], [5, 2**35]], dtype=np.int64)  # beyond float32's exact integers
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        reduced = all_reduce(ConfusionMatrix(2, matrix=big.copy()))
    finally:
        dist.destroy_process_group()
    assert reduced.matrix.dtype == np.int64
    np.testing.assert_array_equal(reduced.matrix, big)


def _reduce_on_rank(rank: int, rendezvous: str, parts: list[np.ndarray], out: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=len(parts))
    try:
        reduced = all_reduce(ConfusionMatrix(3, matrix=parts[rank].copy()))
    finally:
        dist.destroy_process_group()
    np.save(f"{out}{rank}.npy", reduced.matrix)


@pytest.mark.slow
def test_all_reduce_over_two_gloo_processes_gives_every_rank_the_sum(tmp_path):
    import torch.multiprocessing as mp

    parts = [np.array([[5, 1, 0], [2, 0, 1], [0, 0, 7]]), np.array([[0, 0, 0], [0, 3, 0], [0, 1, 0]])]
    out = str(tmp_path / "rank")
    mp.spawn(_reduce_on_rank, args=(f"file://{tmp_path / 'rendezvous'}", parts, out), nprocs=2)
    for rank in range(2):
        np.testing.assert_array_equal(np.load(f"{out}{rank}.npy"), HAND)
