"""The session worker that runs inside each session pod (issue: the session worker)."""
