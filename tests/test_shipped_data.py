"""What the repository ships besides code stays small: sample data, demo weights and test fixtures together."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("sample_data", "mdseg/weights", "tests/fixtures")
BUDGET_BYTES = 30_000_000  # 30 MB, as sample_data/README.md says


def test_sample_data_demo_weights_and_fixtures_stay_under_30_mb():
    files = [
        path
        for folder in SHIPPED
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    sizes = {str(path.relative_to(ROOT)): path.stat().st_size for path in files}
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    total = sum(sizes.values())
    assert total < BUDGET_BYTES, f"shipped data is {total / 1e6:.1f} MB; the largest files: {largest}"
