"""The segmentation module's losses, a training step, panoptic inference and distributed PQ."""
import math

import pytest
import torch

from otlearn.data.shapes import collate_panoptic, SyntheticPanopticShapes
from otlearn.point2mask import PointSupervisedSegmentation, PseudoLabel, group_instances
from otlearn.point2mask.losses import boundary_loss, color_affinity_loss, instance_targets
from tests._dist import run_workers
from tests.point2mask._workers import pq_of_shard


def _label(ids):
    ids = torch.as_tensor(ids)
    segs = [{"id": int(i), "category_id": 0, "isthing": True} for i in torch.unique(ids) if i > 0]
    return PseudoLabel(ids, segs, torch.zeros_like(ids), ids - 1)


def test_boundary_loss_by_hand():
    ids = torch.tensor([[1, 1, 2]])
    b = torch.tensor([[[0.1, 0.2, 0.6]]])
    # right pairs: (1,1) same → −log(1 − 0.2); (1,2) different → −log(0.6); each group averaged, then added
    expected = -math.log(0.8) - math.log(0.6)
    assert boundary_loss(b, [_label(ids)]).item() == pytest.approx(expected, rel=1e-5)
    void = torch.tensor([[1, 0, 2]])  # pairs touching VOID are skipped
    assert boundary_loss(b, [_label(void)]).item() == 0.0


def test_instance_targets_point_to_mask_centres():
    ids = torch.zeros(9, 9, dtype=torch.long)
    ids[1:4, 1:4] = 1
    heat, offset, things = instance_targets([_label(ids)], sigma=1.0)
    assert heat[0, 2, 2] == pytest.approx(1.0) and heat[0, 8, 8] < 1e-6
    assert offset[0, :, 1, 1].tolist() == [1.0, 1.0] and offset[0, :, 3, 2].tolist() == [-1.0, 0.0]
    assert int(things.sum()) == 9


def test_color_affinity_pulls_similar_neighbours_only():
    image = torch.zeros(1, 3, 4, 4)
    image[..., 2:] = 1.0  # two flat halves
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    loss = color_affinity_loss(logits, image)
    assert loss.item() == pytest.approx(math.log(2))  # uniform predictions agree with probability 1/2
    confident = torch.zeros(1, 2, 4, 4)
    confident[:, 0, :, :2] = 20.0
    confident[:, 1, :, 2:] = 20.0  # different classes across the colour edge: no penalty
    assert color_affinity_loss(confident, image).item() < 1e-6


def test_training_step_gives_finite_losses_and_gradients_everywhere():
    torch.manual_seed(0)
    model = PointSupervisedSegmentation(num_classes=5, thing_classes=[0, 1, 2], backbone="resnet10t", width=16, pseudo_start_step=0)
    batch = collate_panoptic([SyntheticPanopticShapes(2, 48, seed=1)[i] for i in range(2)])
    logged = {}
    model.log_dict = lambda d, **kw: logged.update(d)  # outside a Trainer
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    for key in ("loss_point", "loss_affinity", "loss_boundary", "loss_embedding", "loss_panoptic", "loss_center",
                "loss_offset"):
        assert torch.isfinite(torch.as_tensor(logged[f"train/{key}"])), key
    for name in ("point_head", "panoptic_head", "boundary_head", "embedding_head", "center_head", "offset_head"):
        grad = getattr(model.net, name).weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert logged["train/ot_iters"] > 0


def test_panoptic_output_is_well_formed():
    model = PointSupervisedSegmentation(num_classes=5, thing_classes=[0, 1, 2], backbone="resnet10t", width=16).eval()
    out = model.panoptic(torch.rand(2, 3, 40, 40))
    for ids, segs in out:
        assert ids.shape == (40, 40)
        assert set(torch.unique(ids).tolist()) - {0} == {s["id"] for s in segs}


def test_group_instances_splits_things_at_predicted_centres():
    semantic = torch.full((10, 20), 3)
    semantic[2:8, 2:18] = 0  # one thing region holding two objects
    center = torch.zeros(10, 20)
    center[5, 5], center[5, 14] = 0.9, 0.8
    offset = torch.zeros(2, 10, 20)  # no offsets: pixels go to the nearest centre
    ids, segs = group_instances(semantic, center, offset, [0], 4, min_area=4)
    things = [s for s in segs if s["isthing"]]
    assert len(things) == 2 and sorted(s["area"] for s in things) == [48, 48]
    assert [s["category_id"] for s in segs if not s["isthing"]] == [3]


def test_distributed_pq_equals_single_process():
    single = pq_of_shard(0, 1, 6)
    for world in (2, 3):
        for result in run_workers(pq_of_shard, world, 6):
            assert result == pytest.approx(single)


def test_partial_transport_pseudo_masks_train_and_leave_the_dustbin_void():
    """``pseudo_mass`` reaches the generator: about (1 − mass) of each image's thing foreground is VOID in the
    pseudo-labels the losses see (ignored by the semantic loss), and a training step stays finite."""
    torch.manual_seed(0)
    model = PointSupervisedSegmentation(num_classes=5, thing_classes=[0, 1, 2], backbone="resnet10t", width=16,
                                        pseudo_start_step=0, pseudo_mass=0.7)
    assert model.generator.mass == 0.7 and model.warmup_generator.mass == 0.7
    batch = collate_panoptic([SyntheticPanopticShapes(2, 48, seed=1)[i] for i in range(2)])
    for label, probs, points, labels in zip(model.pseudo_labels(batch), model(batch["image"])["point_logits"].softmax(1),
                                            batch["points"], batch["point_labels"]):
        _, foreground, _, _ = model.generator.layout(probs.double(), points, labels)
        void = float((label.instance[foreground] < 0).double().mean())
        assert abs(void - 0.3) < 0.02, void
        assert bool((label.semantic[foreground][label.instance[foreground] < 0] == 255).all())
    model.log_dict = lambda d, **kw: None
    assert torch.isfinite(model.training_step(batch, 0))
    with pytest.raises(ValueError, match="needs method='ot'"):
        PointSupervisedSegmentation(num_classes=5, thing_classes=[0, 1, 2], pseudo_method="voronoi", pseudo_mass=0.7)
