"""The post-connect hooks' rows (`salon_post_connect_hooks`): one per company and hook, with
its status, attempts and last error.

Here, in `db/`, because every query on the project's tables lives in the storage layer; the
worker's `worker.hook` decides when to call and retry, this module how each outcome is kept
(a hook that succeeded once is never called again, across restarts and pods).
"""

from __future__ import annotations

import asyncpg


async def hook_succeeded(pool: asyncpg.Pool, company_id: str, hook: str) -> bool:
    """Whether this hook already succeeded for the company."""
    row = await pool.fetchrow(
        "SELECT status FROM salon_post_connect_hooks WHERE company_id = $1 AND hook = $2",
        company_id, hook)
    return row is not None and row["status"] == "succeeded"


async def record_attempt(pool: asyncpg.Pool, company_id: str, hook: str, attempt: int,
                         error: str | None) -> None:
    """One call made: `succeeded` when `error` is None, else still `pending` with the error."""
    await pool.execute(
        """
        INSERT INTO salon_post_connect_hooks (company_id, hook, status, attempts, last_error,
                                              succeeded_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'succeeded' THEN now() END, now())
        ON CONFLICT (company_id, hook) DO UPDATE SET
            status = EXCLUDED.status, attempts = salon_post_connect_hooks.attempts + 1,
            last_error = EXCLUDED.last_error, succeeded_at = EXCLUDED.succeeded_at,
            updated_at = now()
        """,
        company_id, hook, "succeeded" if error is None else "pending", attempt, error)


async def record_failed(pool: asyncpg.Pool, company_id: str, hook: str) -> None:
    """The attempts ran out: the hook is `failed` (until the next connect tries again)."""
    await pool.execute(
        "UPDATE salon_post_connect_hooks SET status = 'failed', updated_at = now() "
        "WHERE company_id = $1 AND hook = $2", company_id, hook)
