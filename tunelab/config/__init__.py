"""The run config: typed sections, the run types, YAML + overrides, and the error messages.

`from tunelab.config import X` is the public way in; each module lists its names in __all__."""

from tunelab.config import run, sections
from tunelab.config.run import *  # noqa: F403
from tunelab.config.sections import *  # noqa: F403

__all__ = [*run.__all__, *sections.__all__]
