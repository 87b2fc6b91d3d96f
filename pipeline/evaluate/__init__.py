"""Evaluation: the evaluator network (evaluator.py), the metrics in its feature space (metrics.py), the few-label
pretraining experiment (pretraining.py) and the evaluation of one trained model (run.py).

Kept empty on purpose: importing `pipeline.evaluate.metrics` (as the training loops do, for their curves) must
not import the rest of evaluation, or every training stage would depend on it.
"""
