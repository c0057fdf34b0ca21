"""The front end's view of the model: which weights a pipeline runs, and the notice that it is the built-in one.

Each stage loads its own part (stages/t3/part.py, stages/cfm/part.py, stages/hifigan/part.py);
this module only names the spec the launcher hands them.
"""
from __future__ import annotations

import sys

from stages.common.spec import BUILTIN_PRESET, DTYPES, REQUIRED_FILES, ModelSpec

__all__ = ["BUILTIN_PRESET", "DTYPES", "REQUIRED_FILES", "ModelSpec", "warn_if_builtin"]


def warn_if_builtin(spec: ModelSpec) -> None:
    if spec.builtin:
        msg = f"warning: no --checkpoint given: using the {spec.describe()}; the audio is noise, not speech"
        print(msg, file=sys.stderr)
