"""The states of a background job, shared by the job engine, the `jobs` table and the pages.

queued -> running -> done | failed | cancelled (a queued job may be cancelled before it starts).
"""

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("done", "failed", "cancelled")
STATES = ACTIVE_STATES + TERMINAL_STATES
