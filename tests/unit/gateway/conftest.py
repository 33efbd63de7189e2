from __future__ import annotations

import sys
from pathlib import Path

# The fakes module sits beside the tests; make it importable under any pytest import mode.
sys.path.insert(0, str(Path(__file__).parent))
