"""Names of each task's measures, in one place: the metric an evaluation reports (higher is
better) and the per-example val score that paired comparisons use."""

from __future__ import annotations

# EvalResult.metric: accuracy, R^2, or next-token accuracy (per window, averaged).
METRIC = {"classification": "accuracy", "regression": "r2", "language-model": "token_accuracy"}
METRIC_TITLE = {"classification": "accuracy", "regression": "R^2", "language-model": "token accuracy"}
METRIC_SYMBOL = {"classification": "accuracy", "regression": "R²", "language-model": "token accuracy"}
# Per-example val scores (probes.training.val_scores): correct or not; squared error; the
# window's mean next-token cross-entropy in nats (the last two lower-better).
SCORE = {"classification": "accuracy", "regression": "mse", "language-model": "cross_entropy"}
SCORE_TITLE = {"classification": "accuracy", "regression": "MSE", "language-model": "cross-entropy"}
