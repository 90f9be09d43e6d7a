"""Evaluation metrics on frozen encoders, as pure functions of arrays and callables.

- `probes`: linear probe (returns the head, reused by TTA) and weighted kNN.
- `equivariance`: steering error/cosine, gamma, SIE retrieval (MRR, H@k), PRE, R^2.
- `learned_equivariance`: per-layer correlation measure and Lie-derivative LEE.
- `ood`: MSP/entropy scores and rank-based ROC AUC.
- `corruptions`: the 15 ImageNet-C corruptions at 5 severities, equal to the `imagecorruptions` package.
"""
