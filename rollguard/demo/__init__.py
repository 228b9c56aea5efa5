"""``rollguard demo``: a model service, the worker and Kafka on one machine, deciding live.

Three experiments run side by side on loan applications (River's Agrawal data): a better
candidate in shadow mode, a candidate with a training/serving skew in shadow mode, and a
canary whose traffic share grows as the worker's analyses pass; a fourth compares two film
recommenders by interleaving their lists. See docs/demo.md.

    from rollguard.demo import run_demo
    result = run_demo(fast=True)        # prints progress, then the decisions
    result.exit_code                    # 0 when every experiment reached its decision
"""

from rollguard.demo.run import DemoError, DemoResult, run_demo

__all__ = ["DemoError", "DemoResult", "run_demo"]
