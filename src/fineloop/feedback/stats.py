"""Reward statistics per project: counts by kind, a histogram, and a time series."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.feedback.rewards import RewardPolicy, effective_reward, usable_for_training
from fineloop.schemas import HistogramBin, RewardStats, TimeBucket
from fineloop.store.schema import Feedback

Bucket = Literal["hour", "day", "week"]
_BINS = 20


def reward_stats(
    session: Session, project_id: int, policy: RewardPolicy, *, bucket: Bucket = "day"
) -> RewardStats:
    """Statistics of effective (decayed) rewards as of now."""
    now = datetime.now(UTC)
    rows = session.execute(
        select(Feedback.kind, Feedback.reward, Feedback.timestamp).where(
            Feedback.project_id == project_id
        )
    )
    by_kind: Counter[str] = Counter()
    bins = [0] * _BINS
    buckets: dict[datetime, list[float]] = defaultdict(list)
    total = trainable = 0
    reward_sum = 0.0
    for kind, reward, timestamp in rows:
        effective = effective_reward(policy, reward, timestamp, now)
        total += 1
        trainable += usable_for_training(policy, effective)
        reward_sum += effective
        by_kind[kind] += 1
        bins[min(_BINS - 1, int((effective + 1.0) / 2.0 * _BINS))] += 1
        buckets[_bucket_start(timestamp, bucket)].append(effective)
    width = 2.0 / _BINS
    return RewardStats(
        total=total,
        trainable=trainable,
        by_kind=dict(sorted(by_kind.items())),
        mean_reward=reward_sum / total if total else None,
        histogram=[
            HistogramBin(low=-1.0 + i * width, high=-1.0 + (i + 1) * width, count=count)
            for i, count in enumerate(bins)
        ],
        over_time=[
            TimeBucket(start=start, count=len(values), mean_reward=sum(values) / len(values))
            for start, values in sorted(buckets.items())
        ],
    )


def _bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    return day - timedelta(days=day.weekday())
