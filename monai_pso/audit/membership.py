"""Membership signal: can the distance to the release tell training patients from unseen ones?

Each patient is scored by the distance from their closest image to the nearest released image: the
signal a distance-based guard itself leaves behind. Training patients (members) are the positives,
holdout patients the negatives, and a smaller distance means "member". The ROC AUC (scikit-learn) is
0.5 when the release carries no such signal, 1.0 when every training patient is closer than every
holdout patient. Its 95% interval is a percentile bootstrap over patients, resampling members and
non-members separately (their numbers stay fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from monai_pso.audit.intervals import percentile_interval, stratified_bootstrap


def rank_auc(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC along the last axis (ties count half): vectorised over bootstrap rows.

    Examples
    --------
    >>> float(rank_auc(np.array([3.0, 4.0]), np.array([1.0, 3.0])))
    0.875
    """
    positives, negatives = np.atleast_2d(positives), np.atleast_2d(negatives)
    n_pos, n_neg = positives.shape[-1], negatives.shape[-1]
    ranks = rankdata(np.concatenate([positives, negatives], axis=-1), axis=-1)
    auc = (ranks[..., :n_pos].sum(axis=-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return auc.squeeze()


@dataclass(frozen=True)
class MembershipResult:
    """Outcome of :func:`membership_signal`: AUC, bootstrap interval and the ROC curve."""

    auc: float
    ci: tuple[float, float]
    members: int
    non_members: int
    fpr: np.ndarray
    tpr: np.ndarray

    def to_dict(self) -> dict:
        return {"auc": self.auc, "ci": list(self.ci), "member_patients": self.members, "non_member_patients": self.non_members}


def membership_signal(
    member_distances: np.ndarray,
    non_member_distances: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> MembershipResult:
    """AUC of "closer to the release means training patient", one distance per patient.

    Examples
    --------
    >>> result = membership_signal(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.5, 0.6]), n_resamples=200)
    >>> round(result.auc, 3), result.ci[0] <= result.auc <= result.ci[1]
    (0.889, True)
    """
    members, non_members = -np.asarray(member_distances, np.float64), -np.asarray(non_member_distances, np.float64)
    if len(members) == 0 or len(non_members) == 0:
        raise ValueError("the membership signal needs at least one member and one non-member patient")
    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    scores = np.r_[members, non_members]
    auc = float(roc_auc_score(labels, scores))
    replicates = stratified_bootstrap((members, non_members), rank_auc, n_resamples, seed)
    fpr, tpr, _ = roc_curve(labels, scores)
    return MembershipResult(auc, percentile_interval(replicates, confidence), len(members), len(non_members), fpr, tpr)
