"""What every task family reads and writes: the project's feedback as typed records, the
leak-free split, content hashes and snapshots as HF `datasets`.

Tasks get their data from `read_project` and never query the store's tables, so the
store's layout can change without touching a task.
"""

from fineloop.data.reader import read_project
from fineloop.data.records import (
    CatalogItem,
    FeedbackRecord,
    ProjectData,
    ProjectInfo,
    ShownInteraction,
)

__all__ = [
    "CatalogItem",
    "FeedbackRecord",
    "ProjectData",
    "ProjectInfo",
    "ShownInteraction",
    "read_project",
]
