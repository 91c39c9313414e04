"""divssl: compute-normalized studies of pretraining data diversity for SSL.

See the README for the command line and ``../shared/DESIGN.md`` for the glossary.
"""

__version__ = "0.1.0"
