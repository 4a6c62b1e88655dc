"""Per-worker training engine: Ray Train (V2) TorchTrainer driving a DeepSpeed engine.

Generic over the objective: callers pass `loss_fn(engine, batch) -> (loss, metrics)`.
"""

from raydaa.train.deepspeed_config import build_deepspeed_config, lr_factor, model_load_kwargs
from raydaa.train.loop import train_loop_per_worker
from raydaa.train.settings import TrainSettings
from raydaa.train.sharding import BatchPlan
from raydaa.train.trainer import build_trainer, run_training

__all__ = [
    "BatchPlan",
    "TrainSettings",
    "build_deepspeed_config",
    "build_trainer",
    "lr_factor",
    "model_load_kwargs",
    "run_training",
    "train_loop_per_worker",
]
