"""The loss library under its contract name, `raydaa.losses`: it lives in raydaa.core.losses,
and this name is that very module (not a copy)."""

import sys

from raydaa.core import losses as _losses

sys.modules[__name__] = _losses
