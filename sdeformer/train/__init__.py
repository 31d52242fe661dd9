"""Training shaped and standard Transformers as causal language models with optax."""

from __future__ import annotations

from .criterion import classify as classify
from .criterion import study_table as study_table
from .criterion import summarise_study as summarise_study
from .data import CopyTask as CopyTask
from .data import Corpus as Corpus
from .data import RecallTask as RecallTask
from .data import TextTask as TextTask
from .data import make_tasks as make_tasks
from .data import stdlib_corpus as stdlib_corpus
from .data import text_corpus as text_corpus
from .engine import LaneTrainer as LaneTrainer
from .engine import StepSpec as StepSpec
from .group import GroupTrainer as GroupTrainer
from .lm import LanguageModel as LanguageModel
from .loop import TrainResult as TrainResult
from .loop import train as train
from .shaping import Shaping as Shaping
from .shaping import ShapingSchedule as ShapingSchedule
from .spec import MODEL_KINDS as MODEL_KINDS
from .spec import ModelSpec as ModelSpec
from .spec import TrainConfig as TrainConfig
from .spec import kind_spec as kind_spec
from .study import PROFILES as PROFILES
from .study import StudyProfile as StudyProfile
