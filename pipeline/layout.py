"""Which model a checkpoint directory holds (the code lives in stages/common/layout.py, which the stages share)."""
from stages.common.layout import (CHATTERBOX, CHATTERBOX_FILES, LAYOUT_FILES, MARKER_FILES, MODEL_KINDS, TURBO,
                                  TURBO_FILES, TURBO_PRESETS, CHATTERBOX_PRESETS, PRESETS, AmbiguousCheckpointError, detect_model, preset_model)

__all__ = ["CHATTERBOX", "CHATTERBOX_FILES", "LAYOUT_FILES", "MARKER_FILES", "MODEL_KINDS", "TURBO", "TURBO_FILES",
           "TURBO_PRESETS", "CHATTERBOX_PRESETS", "PRESETS", "AmbiguousCheckpointError", "detect_model", "preset_model"]
