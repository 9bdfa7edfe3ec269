from __future__ import annotations

import os
import shutil

import pytest

requires_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

POSTGRES_URL = os.environ.get("C2D_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
