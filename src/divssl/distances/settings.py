"""The settings of a distance computation: the one declaration that ``divssl distance``, a study's
``distances`` entries and :func:`divssl.distances.cli.run_distance` share.

``divssl distance`` generates its options from :class:`DistanceSettings`
(:mod:`divssl.options`); a study's ``DistanceSpec`` (:mod:`divssl.study.spec`) is the same model,
whose ``a``/``b`` may also name the study's pools and tasks. Where it runs (``--device``) and
where the CLI writes (``--out``) are not settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import JsonDict

from divssl.evaluate.settings import Count, Seed

MetricName = Literal["fid", "kid", "vdna", "vendi"]
PAIR_METRICS = ("fid", "kid", "vdna")  # compare an a pool with a b pool; vendi scores one pool
NO_SPLIT: JsonDict = {"split": False}  # pool specs may hold commas (shard URL brace expansions)


class DistanceSettings(BaseModel):
    """FID / KID / VisualDNA between every ``a`` pool and every ``b`` pool.

    The defaults are those of :func:`divssl.distances.kid` / :func:`divssl.distances.vdna` and of
    :func:`divssl.distances.pool_features` (at most 50,000 images per pool, the usual FID sample).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    a: Annotated[list[str], Field(min_length=1)] = Field(
        description="pool spec of a row", json_schema_extra=NO_SPLIT
    )
    metric: Annotated[list[MetricName], Field(min_length=1)] = Field(
        ["fid"],
        description="subset of fid, kid, vdna (between pools) and vendi (the Vendi score of each "
        "pool: effective number of distinct images)",
    )
    b: list[str] = Field(
        [],
        validate_default=True,  # the check that pair metrics have a b runs when b is not given
        description="pool spec of a column; not needed for --metric vendi, which scores each "
        "pool on its own",
        json_schema_extra=NO_SPLIT,
    )
    extractor: str = Field(
        "inception",
        description="inception, dinov2_vitb14, mugs_vitb16, pixels (no weights), run:DIR, "
        "tv:NAME or timm:NAME",
    )
    weights: str | None = Field(
        None, description="local state_dict file (or $DIVSSL_<NAME>_WEIGHTS)"
    )
    max_images: Annotated[int, Field(ge=2)] = Field(50_000, description="images sampled per pool")
    seed: Seed = Field(0, description="seed of the image sample and KID subsets")
    layers: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="module names hooked for VisualDNA (default: the extractor's)"
    )
    input_size: Count | None = Field(None, description="override the extractor's input side (px)")
    kid_subsets: Count = Field(100, description="KID subsets")
    kid_subset_size: Annotated[int, Field(ge=2)] = Field(1000, description="images per KID subset")
    vdna_bins: Annotated[int, Field(ge=2)] = Field(1000, description="VisualDNA bins per neuron")
    vdna_reference: str | None = Field(
        None, description="pool whose activations fix VisualDNA's ranges (default: the first a)"
    )
    batch_size: Count = Field(64, description="images per extraction batch")
    vendi_kernel: Literal["cosine", "rbf"] = Field(
        "cosine", description="Vendi similarity kernel: cosine (exact) or rbf (Nystrom above 4k)"
    )

    @field_validator("b")
    @classmethod
    def _pairs_need_b(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """FID, KID and VisualDNA compare pools: they need ``b`` (``metric`` is validated first)."""
        pair = [m for m in info.data.get("metric", []) if m in PAIR_METRICS]
        if pair and not value:
            raise ValueError(f"{', '.join(pair)} compare(s) two pools: give at least one b pool")
        return value

    @field_validator("metric", mode="before")
    @classmethod
    def _split_and_dedupe(cls, value: Any) -> Any:
        """``"fid,kid"`` or ``["kid", "fid,kid"]`` -> ``["kid", "fid"]`` (order kept)."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        names: list[Any] = []
        for item in items:
            parts = item.split(",") if isinstance(item, str) else [item]
            for part in parts:
                name = part.strip().lower() if isinstance(part, str) else part
                if name != "" and name not in names:
                    names.append(name)
        return names
