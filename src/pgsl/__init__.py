"""PGSL: Proximal Gradient Split Learning (Khowaja et al., IEEE TNSE 2023).

Client side (``pgsl.client``) -> the cut (``pgsl.split``) -> server side (``pgsl.server``,
``pgsl.recovery``). See the README for the data flow.
"""

__version__ = "0.1.0"  # the only place the version is written: pyproject.toml reads it from here
