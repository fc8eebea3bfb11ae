"""The run config: typed sections, the run types, YAML + overrides, and the error messages.

`from tunelab.config import X` is the public way in; each module lists its names in __all__."""

from tunelab.config import load, run, sections, switch
from tunelab.config.load import *  # noqa: F403
from tunelab.config.run import *  # noqa: F403
from tunelab.config.sections import *  # noqa: F403
from tunelab.config.switch import *  # noqa: F403

__all__ = [*load.__all__, *run.__all__, *sections.__all__, *switch.__all__]
