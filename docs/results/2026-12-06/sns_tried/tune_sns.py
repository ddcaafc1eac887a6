"""tools/tune_scripted_rally.py with the SNS swing law (window 0.2 s, acceleration bounds):

python tune_sns.py --gens 10 --pop 16 --per 32 --steps 1000 --sigma 0.03 --start rally --out tune_sns.json
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[3] / "tools"))
import tune_scripted_rally as tune  # noqa: E402
from sns_policy import SwingWindowSNS as P  # noqa: E402

tune.BatchedScriptedPolicy = P
tune.main(sys.argv[1:])
