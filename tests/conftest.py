import os, warnings
import numpy as np
import pytest
import torch

warnings.filterwarnings('ignore', category=FutureWarning, module='torch')


@pytest.fixture(autouse=True)
def _seeded():
    from fastai.torch_core import set_seed
    set_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(scope='session')
def id_images(tmp_path_factory):
    "A folder of 4×4 PNGs whose pixel value is the image's own number, in class folders by number % 3 (ImageNet-style)"
    from PIL import Image
    root = tmp_path_factory.mktemp('ids')
    for i in range(60):
        split = 'valid' if i >= 48 else 'train'
        d = root/split/f'c{i % 3}'
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(d/f'{i:03d}.png')
    return root


def image_number(x):
    "The number a batch of constant id images was made from"
    return (x.float().mean((1, 2, 3))*255).round().long().as_subclass(torch.Tensor)
