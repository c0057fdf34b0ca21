"""The text front-end of long-form synthesis: per-model segment budgets, the sentence segmenter, the request plan."""
from pipeline.text.budget import SegmentBudget, budget_for, for_model
from pipeline.text.plan import LongFormPlan, PlannedSegment, make_plan, pause_samples
from pipeline.text.segment import Segment, Segmentation, normalise, segment_text

__all__ = ["SegmentBudget", "budget_for", "for_model", "LongFormPlan", "PlannedSegment", "make_plan", "pause_samples",
           "Segment", "Segmentation", "normalise", "segment_text"]
