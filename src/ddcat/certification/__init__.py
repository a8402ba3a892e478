"""Certified robustness by randomized smoothing for segmentation (SegCertify, Fischer, Baader &
Vechev, ICML 2021): the statistics (:mod:`~ddcat.certification.smoothing`), the sampling loop
(:mod:`~ddcat.certification.certify`) and the entry points (:mod:`~ddcat.certification.run`).
A layer beside evaluation: it imports the ground floor, data, models, checkpoint and evaluation's
model loading; it returns records, and the reporting layer formats them."""

from ddcat.certification.certify import CERTIFY_VERSION, CertifyPlan, certify_dataset, sample_seed
from ddcat.certification.run import CertifyResult, certify_checkpoint, certify_model
from ddcat.certification.smoothing import binomial_pvalues, certified_radius, holm_reject, bonferroni_reject, min_samples

__all__ = [
    "CERTIFY_VERSION",
    "CertifyPlan",
    "CertifyResult",
    "binomial_pvalues",
    "bonferroni_reject",
    "certified_radius",
    "certify_dataset",
    "certify_checkpoint",
    "certify_model",
    "holm_reject",
    "min_samples",
    "sample_seed",
]
