"""Small datasets the training tests write themselves: labelled reviews (text) and a typed table (categories, booleans)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = (
    "The food was wonderful and the staff friendly.",
    "Lovely dinner, delicious dishes and a warm welcome.",
    "Excellent service, tasty meals, we will come back.",
    "A great evening: fresh ingredients and kind waiters.",
    "Fantastic flavours and a cosy, pleasant room.",
    "Amazing desserts and very helpful staff.",
)
NEGATIVE = (
    "The food was cold and the staff rude.",
    "Terrible dinner, bland dishes and a long wait.",
    "Awful service, greasy meals, we will never return.",
    "A horrible evening: stale bread and careless waiters.",
    "Disgusting flavours and a dirty, noisy room.",
    "Burnt steak and very unfriendly staff.",
)
OPENERS = ("", "Honestly, ", "Overall, ", "In short: ", "Well, ")
CLOSERS = ("", " Really.", " That is all.", " Ten out of ten would say so.", " Nothing more to add.")

#: Reviews no training row contains, for checking the served model.
CLEARLY_POSITIVE = "Wonderful food, delicious dishes and the friendliest staff we have ever met."
CLEARLY_NEGATIVE = "Horrible food, rude staff and a dirty table; the worst dinner we ever had."


def write_reviews(path: Path, rows: int = 140, seed: int = 7) -> Path:
    """A CSV of restaurant reviews: `review` (free text), `visits` (a number) and `sentiment` (positive/negative)."""
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "visits", "sentiment"])
        for index in range(rows):
            good = index % 2 == 0
            sentence = rng.choice(POSITIVE if good else NEGATIVE)
            writer.writerow(
                [rng.choice(OPENERS) + sentence + rng.choice(CLOSERS), rng.randint(1, 9), "positive" if good else "negative"]
            )
    return path


def write_typed_table(path: Path, rows: int = 80, seed: int = 3) -> Path:
    """A CSV with a category (`color`: red/green/blue), a number (`size`), a boolean (`fresh`) and a yes/no `target`."""
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["color", "size", "fresh", "target"])
        for _ in range(rows):
            color, size, fresh = rng.choice(("red", "green", "blue")), round(rng.uniform(0, 10), 2), rng.random() < 0.5
            writer.writerow([color, size, fresh, "yes" if color == "red" or size > 7 else "no"])
    return path
