"""Pools, orderings, compositions, generators and the budgeted loader."""

from divssl.data.pool import Pool, open_pool, parse_spec, register_pool

__all__ = ["Pool", "open_pool", "parse_spec", "register_pool"]
