"""Re-record the workflow histories tests/test_replay.py replays: runs the tests marked
`records_history` with `--record-histories`, which rewrite their files under tests/histories/.

    .venv/bin/python -m tests.record_histories [more pytest arguments]
"""

from __future__ import annotations

import sys

import pytest


def main() -> int:
    return int(pytest.main(["-q", "-m", "records_history", "--record-histories", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
