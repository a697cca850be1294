"""Training on weighted subsets: jitted steps, epoch scans, the `fit` loop, schedules, evaluation."""

from jaxsubset.train.dynamic import POLICIES, RS2, InfoBatch, RandomOnline
from jaxsubset.train.engine import cache_info as fit_cache_info
from jaxsubset.train.engine import clear_cache as clear_fit_cache
from jaxsubset.train.evaluate import accuracy, make_predict, predict
from jaxsubset.train.loop import FitResult, as_pure, fit
from jaxsubset.train.loss import weighted_loss, weighted_mean
from jaxsubset.train.schedules import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from jaxsubset.train.step import epoch_order, make_epoch, make_indexed_step, make_train_step

__all__ = ["fit", "FitResult", "as_pure", "accuracy", "predict", "make_predict", "weighted_loss", "weighted_mean",
           "make_schedule", "make_optimizer", "SCHEDULES", "OPTIMIZERS", "make_train_step", "make_epoch", "make_indexed_step",
           "epoch_order", "InfoBatch", "RandomOnline", "RS2", "POLICIES", "clear_fit_cache", "fit_cache_info"]
