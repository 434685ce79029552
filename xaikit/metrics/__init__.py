"Metrics: localisation (pointing games, energy) and faithfulness (insertion/deletion, CAUC/CDROP), per image and over a data set."
# Hand-written re-exports (nbdev never generates package __init__ files): `from xaikit.metrics import ...` keeps working.
# Modules, each from its notebook: table (30), base: maps, ground truth, samples, `Metric` (31), localization (32),
# faithfulness (33), evaluation (34). Imports run one way: table <- base <- localization, faithfulness <- evaluation.
from .table import Table
from .base import (SkipSample, Metric, Sample, as_map, center_point, center_map, random_map, boxes_mask, gt_region,
                   tolerance_region, make_sample, to_sample, samples)
from .localization import (pointing_game, stochastic_pointing_game, energy_in_region, PointingGame, StochasticPointingGame,
                           Energy)
from .faithfulness import (curve_auc, Curves, insertion_deletion, contrastive_faithfulness, InsertionDeletion, Insertion,
                           Deletion, ContrastiveFaithfulness)
from .evaluation import evaluate, summarize

__all__ = ['Table', 'SkipSample', 'Metric', 'Sample', 'as_map', 'center_point', 'center_map', 'random_map', 'boxes_mask',
           'gt_region', 'tolerance_region', 'make_sample', 'to_sample', 'samples', 'pointing_game', 'stochastic_pointing_game',
           'energy_in_region', 'PointingGame', 'StochasticPointingGame', 'Energy', 'curve_auc', 'Curves', 'insertion_deletion',
           'contrastive_faithfulness', 'InsertionDeletion', 'Insertion', 'Deletion', 'ContrastiveFaithfulness', 'evaluate',
           'summarize']
