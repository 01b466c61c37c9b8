"""A small asyncio client for the Kubernetes REST API, returning plain JSON dicts.

The node agent and the stack scripts need only a handful of calls; plain dicts keep the
code close to what the API actually sends.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

JSON = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


@dataclass(frozen=True)
class KubeConfig:
    server: str
    token: str
    ca_file: str


class KubeClient:
    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._ssl = ssl.create_default_context(cafile=config.ca_file)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self.config.server,
                headers={"Authorization": f"Bearer {self.config.token}"},
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method, path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else {}
            except json.JSONDecodeError:
                payload = text
            if resp.status >= 400:
                raise KubeError(resp.status, payload, method, path)
            return payload if isinstance(payload, dict) else {"raw": payload}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self.request("DELETE", path, body)

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[JSON]:
        """Yield watch events ({"type": ..., "object": ...}) until the server closes."""
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.get(path, params=query, timeout=timeout) as resp:
            if resp.status >= 400:
                raise KubeError(resp.status, await resp.text(), "WATCH", path)
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
