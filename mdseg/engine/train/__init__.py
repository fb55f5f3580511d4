"""Training: settings, the loop (AdamW + warm-up/poly schedule), validation, checkpoints, resume, DDP.

A run lives in one folder (see `mdseg.engine.runs`): `config.json` (the resolved `TrainSettings`), the
`last`/`best` checkpoints, the resumable `state.safetensors`, `metrics.jsonl`, `curves.png` and TensorBoard files.

- `settings`: `TrainSettings`, the recipes, merging (defaults < config file < recipe < given) and resolving;
- `optim`: AdamW's parameter groups and the learning-rate schedule;
- `data`: the training / validation splits, their normalisation and the training `DataLoader`;
- `loop`: `train` — set-up in small steps, then the loop; validation is `mdseg eval`'s own scoring
  (`mdseg.engine.evaluate.evaluate` on the model in memory);
- `state`: the resumable state; `log`: metrics.jsonl, TensorBoard, curves, progress bar; `stop`: Ctrl-C / SIGTERM.
"""

from mdseg.data.sampler import IterationBatchSampler
from mdseg.engine.train.log import plot_curves
from mdseg.engine.train.loop import TrainResult, train
from mdseg.engine.train.optim import learning_rate, parameter_groups
from mdseg.engine.train.settings import RECIPES, TrainSettings, merge_settings, resolve_settings
from mdseg.engine.train.state import load_state, save_state

__all__ = [
    "RECIPES",
    "IterationBatchSampler",
    "TrainResult",
    "TrainSettings",
    "learning_rate",
    "load_state",
    "merge_settings",
    "parameter_groups",
    "plot_curves",
    "resolve_settings",
    "save_state",
    "train",
]
