"""Alert service benchmark: timer precision with many open cases, and outbox throughput.

    .venv/bin/python -m bench.alerts                      # PostgreSQL, 100,000 open cases
    .venv/bin/python -m bench.alerts --db sqlite --cases 20000

See ``bench/alerts/__main__.py``.
"""
