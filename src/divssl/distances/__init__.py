"""Distribution distances between pools (FID, KID, VisualDNA) and pool diversity (Vendi score).

``metrics`` holds the distance formulas (NumPy in, floats out), ``diversity`` the Vendi score
of one pool (Friedman & Dieng 2023), ``extractors`` the frozen networks,
``pipeline`` the cached pool -> features -> matrix engine and ``cli`` the ``divssl distance``
command. The SSL-diversity paper (Section 6, Table 3) uses 50,000 images per dataset, FID with
InceptionV3 and VisualDNA with MUGS / DINOv2 ViT-B.
"""

from divssl.distances.diversity import VendiResult, vendi, vendi_score
from divssl.distances.extractors import Extractor, extractor_names, get_extractor
from divssl.distances.metrics import (
    KIDResult,
    RankCorrelation,
    VDNAResult,
    fid,
    frechet_distance,
    gaussian_stats,
    kid,
    rank_correlation,
    vdna,
)
from divssl.distances.pipeline import (
    METRICS,
    DistanceTable,
    PoolFeatures,
    distance_matrix,
    pool_features,
)

__all__ = [
    "METRICS",
    "DistanceTable",
    "Extractor",
    "KIDResult",
    "PoolFeatures",
    "RankCorrelation",
    "VDNAResult",
    "VendiResult",
    "distance_matrix",
    "extractor_names",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "get_extractor",
    "kid",
    "pool_features",
    "rank_correlation",
    "vdna",
    "vendi",
    "vendi_score",
]
