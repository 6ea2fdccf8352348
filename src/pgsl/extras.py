"""Optional dependencies, checked before the work that needs them starts.

pgsl's core installs with its package; two capabilities need more (``pyproject.toml``'s extras):
Table II's C&W, BIM and FGSM need ``torchattacks`` (extra ``robustness``, installed by
``scripts/setup.sh`` without its torchvision requirement), the federated job needs ``nvflare``
(extra ``flare``). :func:`require` turns a missing one into a one-line error that names what to
install, instead of a ``ModuleNotFoundError`` deep inside a long run.
"""

from __future__ import annotations

import importlib.util

from pgsl.errors import UserError

# module -> (extra, what needs it, how to install it)
EXTRAS = {
    "torchattacks": ("robustness", "Table II's C&W, BIM and FGSM (pgsl robustness, pgsl reproduce)",
                     "bash scripts/setup.sh, or pip install --no-deps 'torchattacks>=3.5,<4'"),
    "nvflare": ("flare", "the federated job (pgsl flare, pgsl.flare)", "pip install 'pgsl[flare]'"),
}


class MissingExtra(UserError):
    """An optional dependency the requested work needs is not installed."""


def require(module: str) -> None:
    """Raise :class:`MissingExtra` naming the extra to install when ``module`` (a key of
    :data:`EXTRAS`) cannot be imported; imports nothing itself."""
    extra, needed_by, install = EXTRAS[module]
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(f"{needed_by} needs {module}, which is not installed (extra '{extra}'): "
                           f"{install}")
