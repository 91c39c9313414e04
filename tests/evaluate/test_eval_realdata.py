"""End to end on real images: SimCLR on a slice of Fashion-MNIST beats a random-init encoder.

Needs Debian's ``dataset-fashion-mnist`` (IDX files under ``/usr/share/datasets/fashion-mnist``;
CI installs it in ``.ci/run``). Without it the test FAILS, saying how to install it: real data is
part of what the suite checks, so it is never skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# Measured once with exactly this test's settings (seed 0, CPU, torch 2.14.1, 2026-12-02, after
# issue 10's recipes: `recipe=small`): SimCLR kNN top-1 83.03 % [82.3, 83.7], random init 81.41 %
# [80.7, 81.9] on the official 10k test split, a gap of 1.62 points. The test asks for half of
# it, leaving room for float differences between CPUs. (The faithful `cifar` recipe scores 78.7 %
# here, below random init: 117 steps are far from its 1000 epochs; see docs/benchmarks.md.)
MIN_GAIN = 0.008


def _require_data() -> None:
    missing = [f for f in FILES if not (FASHION_MNIST / f).is_file()]
    if missing:
        pytest.fail(
            f"Fashion-MNIST is not installed (missing {missing} under {FASHION_MNIST}); "
            "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)",
            pytrace=False,
        )


@pytest.mark.slow
def test_simclr_on_fashion_mnist_beats_random_init(tmp_path):
    from divssl.evaluate.knn import run_knn
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain

    _require_data()
    pool = f"idx:root={FASHION_MNIST}"
    cfg = load_config(
        None,
        [
            "method=simclr", "recipe=small", "backbone=convnet_tiny", "image_size=28",
            "augment.preset=dino",
            f"data.pool={pool}", "subset.size=10000", "budget.images=30000", "batch_size=256",
            "seed=0",
            "tracking=none", "device=cpu", f"out={tmp_path / 'run'}",
        ],
    )  # fmt: skip
    run_dir = pretrain(cfg)
    common = {"ks": [20], "fractions": [100], "n_boot": 100, "write": False, "device": "cpu"}
    ssl = run_knn(run_dir, pool, **common)["results"][0]["test"]["top1"]
    rand = run_knn(
        None, pool, init="random", backbone="convnet_tiny", image_size=28, seed=0, **common
    )["results"][0]["test"]["top1"]
    print(f"SimCLR kNN {ssl['value']:.4f} [{ssl['ci_low']:.4f}, {ssl['ci_high']:.4f}]; "
          f"random init {rand['value']:.4f}")  # fmt: skip
    assert ssl["n"] == rand["n"] == 10_000  # the official test split
    assert ssl["value"] - rand["value"] >= MIN_GAIN, (ssl, rand)


def test_missing_data_fails_with_the_install_command(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules[__name__], "FASHION_MNIST", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="apt-get install dataset-fashion-mnist"):
        _require_data()
