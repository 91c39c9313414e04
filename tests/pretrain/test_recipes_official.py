"""The ImageNet rows taken from the methods' official repositories, value by value.

Every expected value below was read from the named file at the named commit (written here
independently of ``divssl.pretrain.recipes.data``):

* google-research/simclr@85e8552 (SimCLR v1): README.md ImageNet command ``--train_batch_size=4096
  --train_epochs=100 --learning_rate=0.3 --weight_decay=1e-6 --temperature=0.1``; run.py
  ``--head_proj_dim 128``, ``--num_nlh_layers 1``, ``--warmup_epochs 10``; lars_optimizer.py
  ``EETA_DEFAULT = 0.001``; data_util.py jitter ``0.8 s / 0.2 s`` (s = 1), p 0.8, gray 0.2,
  blur 0.5.
* facebookresearch/moco-v3@c349e6e: CONFIG.md ResNet-50 300-epoch ``--lr=.3 --epochs=300
  --moco-m-cos --crop-min=.2``; main_moco.py ``--batch-size 4096 --wd 1e-6 --moco-t 1.0
  --moco-m 0.99``; ViT-Small ``--optimizer=adamw --lr=1.5e-4 --weight-decay=.1 --warmup-epochs=40
  --moco-t=.2``.
* facebookresearch/dino@7c446df: README.md ResNet-50 command ``--optimizer sgd --lr 0.03
  --weight_decay 1e-4 --weight_decay_end 1e-4 --global_crops_scale 0.14 1 --local_crops_scale 0.05
  0.14`` on 8 GPUs x ``--batch_size_per_gpu 64``; main_dino.py ``--momentum_teacher 0.996
  --teacher_temp 0.04 --out_dim 65536 --clip_grad 3.0 --min_lr 1e-6 --local_crops_number 8``.
* facebookresearch/swav@06b1b7c: scripts/swav_800ep_pretrain.sh ``--batch_size 64`` on 64 GPUs,
  ``--base_lr 4.8 --final_lr 0.0048 --start_warmup 0.3 --wd 0.000001 --queue_length 0 --epochs 800
  --nmb_crops 2 6 --size_crops 224 96 --min_scale_crops 0.14 0.05``; main_swav.py
  ``LARC(trust_coefficient=0.001, clip=False)`` over every parameter.
* facebookresearch/vicreg@4e12602: README.md 1000-epoch command ``--epochs 1000 --batch-size 2048
  --base-lr 0.2``; main_vicreg.py ``--mlp 8192-8192-8192 --wd 1e-6``, end_lr = base_lr x 0.001,
  the variance term halved; augmentations.py blur 1.0 / 0.1, solarization 0 / 0.2.
"""

from __future__ import annotations

from typing import Any

import pytest

from divssl.pretrain.recipes import get_recipe

R50, VIT = "resnet50", "vit_small_patch16"

EXPECTED: dict[str, dict[str, Any]] = {
    "simclr": {
        "batch_size": 4096,
        "optim.name": "lars",
        "optim.base_lr": 0.3,
        "optim.weight_decay": 1e-6,
        "optim.lars_eta": 1e-3,
        "optim.lars_clip": False,
        "optim.exclude_bias_norm": True,
        "optim.warmup_epochs": 10.0,
        "optim.warmup_start_lr": 0.0,
        "optim.final_lr_fraction": 0.0,
        "schedule.reference_epochs": 100.0,
        "method_args.proj_hidden_dim": 2048,
        "method_args.proj_output_dim": 128,
        "method_args.proj_layers": 2,
        "method_args.temperature": 0.1,
        "augment.view1.brightness": 0.8,
        "augment.view2.hue": 0.2,
        "augment.view1.blur_p": 0.5,
        "augment.view2.gray_p": 0.2,
        "augment.view1.scale_min": 0.08,
    },
    "mocov3": {
        "batch_size": 4096,
        "optim.name": "lars",
        "optim.base_lr": 0.3,
        "optim.weight_decay": 1e-6,
        "optim.lars_eta": 1e-3,
        "optim.warmup_epochs": 10.0,
        "schedule.reference_epochs": 300.0,
        "method_args.temperature": 1.0,
        "method_args.base_tau": 0.99,
        "method_args.proj_hidden_dim": 4096,
        "method_args.proj_output_dim": 256,
        "augment.view1.scale_min": 0.2,
        "augment.view1.blur_p": 1.0,
        "augment.view2.blur_p": 0.1,
        "augment.view2.solarize_p": 0.2,
    },
    "dino": {
        "batch_size": 512,
        "optim.name": "sgd",
        "optim.base_lr": 0.03,
        "optim.weight_decay": 1e-4,
        "optim.final_weight_decay": 1e-4,
        "optim.grad_clip": 3.0,
        "optim.final_lr_fraction": 1e-6 / (0.03 * 512 / 256),
        "schedule.reference_epochs": 100.0,
        "method_args.base_tau": 0.996,
        "method_args.teacher_temp": 0.04,
        "method_args.num_prototypes": 65536,
        "augment.view1.scale_min": 0.14,
        "augment.n_local_crops": 8,
        "augment.local_size": 96,
        "augment.local.scale_min": 0.05,
        "augment.local.scale_max": 0.14,
    },
    "swav": {
        "batch_size": 64 * 64,
        "optim.base_lr": 4.8 * 256 / 4096,
        "optim.warmup_start_lr": 0.3,
        "optim.final_lr_fraction": 0.0048 / 4.8,
        "optim.weight_decay": 1e-6,
        "optim.lars_eta": 1e-3,
        "optim.lars_clip": False,
        "optim.exclude_bias_norm": False,
        "schedule.reference_epochs": 800.0,
        "method_args.queue_size": 0,
        "method_args.num_prototypes": 3000,
        "method_args.proj_output_dim": 128,
        "augment.n_local_crops": 6,
        "augment.view1.scale_min": 0.14,
        "augment.local.scale_max": 0.14,
    },
    "vicreg": {
        "batch_size": 2048,
        "optim.base_lr": 0.2,
        "optim.weight_decay": 1e-6,
        "optim.final_lr_fraction": 0.001,
        "schedule.reference_epochs": 1000.0,
        "method_args.proj_hidden_dim": 8192,
        "method_args.proj_output_dim": 8192,
        "method_args.proj_layers": 3,
        "method_args.variance_halved": True,
        "augment.view1.blur_p": 1.0,
        "augment.view2.solarize_p": 0.2,
    },
}

COMMITS = {
    "simclr": "google-research/simclr@85e8552",
    "mocov3": "facebookresearch/moco-v3@c349e6e",
    "dino": "facebookresearch/dino@7c446df",
    "swav": "facebookresearch/swav@06b1b7c",
    "vicreg": "facebookresearch/vicreg@4e12602",
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_official_imagenet_rows_equal_the_reference_files(method: str) -> None:
    table = get_recipe("imagenet", method)
    for key, expected in EXPECTED[method].items():
        assert table[key].resolved(R50) == pytest.approx(expected), key


@pytest.mark.parametrize("method", sorted(COMMITS))
def test_official_rows_cite_the_commit_read_and_none_is_recalled(method: str) -> None:
    for key, ref in get_recipe("imagenet", method).items():
        assert ref.source.startswith(COMMITS[method]), (key, ref.source)
        assert "recalled" not in f"{ref.source} {ref.note}".lower(), key


def test_mocov3_vit_values_from_config_md() -> None:
    table = get_recipe("imagenet", "mocov3")
    assert table["optim.name"].resolved(VIT) == "adamw"
    assert table["optim.base_lr"].resolved(VIT) == 1.5e-4
    assert table["optim.weight_decay"].resolved(VIT) == 0.1
    assert table["optim.warmup_epochs"].resolved(VIT) == 40.0
    assert table["method_args.temperature"].resolved(VIT) == 0.2
