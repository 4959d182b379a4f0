"""Evaluation: per-probe answers, the accuracy matrix and its metrics, the retention gate.

- :mod:`learner.evaluation.probes`: probe samples of a bucket and the model's answers to them.
- :mod:`learner.evaluation.measures`: pure metrics over per-probe answers and the matrix.
- :mod:`learner.evaluation.gate`: the alignment-retention gate, a pure function.
"""
