"""Proof under faults, load and hostile input (the reliability harness).

Run: ``pytest tests/reliability -s`` (modest sizes, a few minutes on two cores);
``VC_STRESS=1`` for the large sizes; ``VC_TEST_DATABASE_URL`` adds the PostgreSQL runs;
``VC_RELIABILITY_SEED`` replays a crash-matrix run; ``VC_RELIABILITY_SCALE=0.2`` for a quick
local pass. Each part prints one ``[reliability]`` line of figures on stderr. The soak
(``python -m tests.reliability.soak --minutes 30``) runs on demand only.

1. test_crash_matrix: runners SIGKILLed at points of a session's life, then recovered.
2. test_concurrency: 8 processes of random operations on one store.
3. test_model: a Hypothesis state machine against a model of docs/ARCHITECTURE.md §2.
4. test_hostile_input: malformed workflows, hostile names, arguments and log lines.
5. test_files_permissions: modes of the store and logs; unsafe workspaces.
6. soak: the long run (RSS and file descriptors over time).
7. test_crash_windows: kills aimed at the crash windows (just after a spawn, just after a
   stage's end, after a pause, twice in a session) and at random moments, with a ledger
   every stage keeps; and full-disk trials.
"""
