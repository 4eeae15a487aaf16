"""Joint image + mask transforms: identical geometry, nearest-neighbour masks, ignore-index padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from datamodules.segmentation import pad_collate
from datamodules.transforms import segmentation_cutmix, segmentation_eval, segmentation_train
from tests.fakes import block_mask, image_for

VALUES = [1, 2, 3, 4]  # no class 0: its palette colour (black) is also the image padding colour


def transformed_pair(seed: int, crop: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A palette-coloured image and its mask through the training transform (no normalisation)."""
    mask = block_mask(121, 97, 5, seed=seed, ignore_border=None, values=VALUES)
    image = tv_tensors.Image(torch.from_numpy(image_for(mask)).permute(2, 0, 1))
    transform = segmentation_train(crop, base_size=100, mean=(0, 0, 0), std=(1, 1, 1),
                                   scale_range=(0.5, 2.0), ignore_index=255)
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, tv_tensors.Mask(torch.from_numpy(mask)[None]))
    palette = torch.from_numpy(image_for(np.arange(256, dtype=np.uint8)[None])[0]).float() / 255
    return out_image, out_mask[0], palette


@pytest.mark.parametrize("seed", range(8))
def test_training_transform_keeps_every_mask_pixel_on_its_image_pixel(seed):
    image, mask, palette = transformed_pair(seed)
    assert image.shape[-2:] == mask.shape == (64, 64)
    valid = mask != 255
    expected = palette[mask[valid].long()]  # (pixels, 3): the colour of each pixel's class
    error = (image.permute(1, 2, 0)[valid] - expected).abs().max(dim=1).values
    close = error < 0.25  # nearer its own class colour than any other
    assert close.float().mean() > 0.95  # only pixels on block edges blend under bilinear resizing


@pytest.mark.parametrize("seed", range(4))
def test_masks_are_resized_nearest_and_padded_with_the_ignore_index(seed):
    image, mask, _ = transformed_pair(seed, crop=200)  # larger than most rescaled images: padding
    assert set(mask.unique().tolist()) <= {*VALUES, 255}
    padded = mask == 255
    assert padded.any()
    assert image[:, padded].abs().max() == 0  # the image is padded with zeros exactly there


def test_evaluation_transform_keeps_full_resolution_and_mask_values():
    mask = tv_tensors.Mask(torch.tensor([[[0, 1, 255]]]))
    image = tv_tensors.Image(torch.full((3, 1, 3), 255, dtype=torch.uint8))
    out_image, out_mask = segmentation_eval((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image, mask)
    assert torch.equal(out_mask, mask)
    assert torch.allclose(out_image, torch.ones(3, 1, 3))


def test_pad_collate_pads_images_with_zeros_and_masks_with_ignore_index():
    small = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long))
    large = (torch.ones(3, 4, 2), torch.ones(4, 2, dtype=torch.long))
    images, masks = pad_collate([small, large], ignore_index=255)
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert masks[0, 2:].eq(255).all() and masks[1, :, 2].eq(255).all()
    assert images[0, :, 2:].eq(0).all() and images[0, :, :2].eq(1).all()


@pytest.mark.parametrize("seed", range(4))
def test_rotation_turns_image_and_mask_together_and_fills_the_corners_with_ignore(seed):
    mask = block_mask(121, 97, 5, seed=seed, ignore_border=None, values=VALUES)
    image = tv_tensors.Image(torch.from_numpy(image_for(mask)).permute(2, 0, 1))
    transform = segmentation_train(96, base_size=100, mean=(0, 0, 0), std=(1, 1, 1), scale_range=(1.0, 1.0),
                                   hflip=False, rotation=40)
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, tv_tensors.Mask(torch.from_numpy(mask)[None]))
    palette = torch.from_numpy(image_for(np.arange(256, dtype=np.uint8)[None])[0]).float() / 255
    valid = out_mask[0] != 255
    error = (out_image.permute(1, 2, 0)[valid] - palette[out_mask[0][valid].long()]).abs().max(dim=1).values
    assert (error < 0.25).float().mean() > 0.95, "each labelled pixel keeps its class colour"
    assert set(out_mask.unique().tolist()) <= {*VALUES, 255}, "masks are rotated nearest"
    labelled = (out_mask != 255).float()[None]
    inside_corners = torch.nn.functional.max_pool2d(labelled, 3, stride=1, padding=1)[0, 0] == 0
    assert inside_corners.any(), "rotated-in corners are ignored"
    assert out_image[:, inside_corners].abs().max() == 0, "and black (off their edge, where bilinear blends)"


def test_cutmix_pastes_the_same_box_of_the_next_image_and_its_mask():
    torch.manual_seed(3)
    masks = torch.stack([torch.full((20, 30), value) for value in (1, 2, 3)])
    images = masks[:, None].float().expand(3, 3, 20, 30) / 10
    mixed_images, mixed_masks = segmentation_cutmix(images, masks, alpha=1.0)
    assert torch.equal(mixed_images[:, 0] * 10, mixed_masks.float()), "every pixel keeps its own label"
    pasted = mixed_masks != masks
    assert pasted.any() and torch.equal(pasted[0], pasted[1]), "one box for the whole batch"
    assert mixed_masks[0][pasted[0]].eq(3).all(), "from the next image"
    rows, cols = pasted[0].nonzero(as_tuple=True)
    assert pasted[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all(), "a rectangle"
