"""Fetch the images of URL lists over HTTP(S); every failure is a reject reason, never an exception.

Bounded: `concurrency` requests in flight, `timeout_s` per request (connect to last byte), bodies
streamed and aborted past `max_bytes`. Retried with exponential backoff and jitter (`backoff_s`
doubling, each wait capped by `max_wait_s`): 429 (honouring Retry-After, capped the same way), 5xx,
408, timeouts, connection resets and bodies cut short. Not retried: other 4xx, DNS failures, too-large
bodies, blocked or invalid URLs. The reason of the last attempt is the row's reject reason.

Hostile URLs: only http and https are fetched, at every redirect hop (a list cannot make us read
file://, ftp:// or data:), and by default no host that is or resolves to a loopback, private,
link-local or otherwise non-global address (`blocked_address`): a scraped list must not make workers
inside a VPC read cloud metadata or internal services into the dataset. Cookies, proxies and .netrc
from the environment are not used. With `respect_opt_out`, X-Robots-Tag noai / noimageai / noindex /
noimageindex (for all agents or ours) rejects the image as `opted_out`, as img2dataset does.
Whether a body is an image is left to the decode stage (`not_an_image`).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from curation.config import DownloadConfig
from curation.schema import RejectReason

SCHEMES = ("http", "https")
MAX_URL_CHARS = 8192
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
# Every reason a fetch can end with.
DOWNLOAD_REASONS = (
    RejectReason.INVALID_URL,
    RejectReason.BLOCKED_ADDRESS,
    RejectReason.HTTP_3XX,
    RejectReason.TOO_MANY_REDIRECTS,
    RejectReason.HTTP_404,
    RejectReason.HTTP_429,
    RejectReason.HTTP_4XX,
    RejectReason.HTTP_5XX,
    RejectReason.TIMEOUT,
    RejectReason.CONNECTION_ERROR,
    RejectReason.OPTED_OUT,
    RejectReason.TOO_LARGE,
)
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Fetched:
    """The outcome of fetching one URL: its bytes, or the reason it has none."""

    data: bytes | None = None
    reason: RejectReason | None = None
    status: int | None = None  # HTTP status of the last response, if any
    attempts: int = 0
    retry: bool = False  # worth another attempt (internal to the retry loop)
    retry_after: float | None = None  # seconds the server asked us to wait


def download_many(urls: Sequence[str | None], config: DownloadConfig) -> list[Fetched]:
    """Fetch every URL (in order); callable from sync code, also from a thread with a running loop."""
    if not urls:
        return []
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_download_all(list(urls), config))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _download_all(list(urls), config)).result()


def check_url(url: object, allow_private: bool = False) -> RejectReason | None:
    """Why this URL must not be fetched, or None. Hostnames are checked again when resolved."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return RejectReason.INVALID_URL
    try:
        parsed = URL(url)
        host = parsed.raw_host
    except (ValueError, TypeError, UnicodeError):
        return RejectReason.INVALID_URL
    if parsed.scheme.lower() not in SCHEMES or not host:
        return RejectReason.INVALID_URL
    if not allow_private:
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None and not is_public_address(str(literal)):
            return RejectReason.BLOCKED_ADDRESS
    return None


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


def backoff_delay(retry: int, retry_after: float | None, config: DownloadConfig) -> float:
    """Seconds to wait before retry number `retry` (1-based): exponential with jitter, at least what
    the server asked for, never more than max_wait_s."""
    delay = config.backoff_s * 2 ** (retry - 1) * random.uniform(0.5, 1.5)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, config.max_wait_s)


def opted_out(headers, agent_token: str) -> bool:
    """X-Robots-Tag with an opt-out directive for all agents or for `agent_token`."""
    for value in headers.getall("X-Robots-Tag", ()):
        agent, sep, directives = value.rpartition(":")
        if sep and agent.strip().lower() not in ("", "*", agent_token):
            continue
        if OPT_OUT_DIRECTIVES & {d.strip().lower() for d in directives.split(",")}:
            return True
    return False


class BlockedAddressError(OSError):
    """A host resolved only to addresses that list URLs may not reach."""


class _PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then keeps only global addresses: no private host behind a public name."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public_address(r["host"])]
        if not public:
            raise BlockedAddressError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


async def _download_all(urls: list[str | None], config: DownloadConfig) -> list[Fetched]:
    resolver = aiohttp.DefaultResolver() if config.allow_private_addresses else _PublicOnlyResolver()
    connector = aiohttp.TCPConnector(limit=config.concurrency, resolver=resolver)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=config.timeout_s),
        headers={"User-Agent": config.user_agent},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    ) as session:
        slots = asyncio.Semaphore(config.concurrency)
        return list(await asyncio.gather(*(_fetch(session, slots, url, config) for url in urls)))


async def _fetch(session: aiohttp.ClientSession, slots: asyncio.Semaphore, url, config: DownloadConfig) -> Fetched:
    attempts = 0
    while True:
        async with slots:  # not held while backing off
            result = await _attempt(session, url, config)
        attempts += 1
        if not result.retry or attempts > config.retries:
            return replace(result, attempts=attempts, retry=False)
        await asyncio.sleep(backoff_delay(attempts, result.retry_after, config))


async def _attempt(session: aiohttp.ClientSession, url, config: DownloadConfig) -> Fetched:
    current = url
    try:
        for _ in range(config.max_redirects + 1):
            reason = check_url(current, config.allow_private_addresses)
            if reason is not None:
                return Fetched(reason=reason)
            async with session.get(current, allow_redirects=False) as response:
                if response.status not in REDIRECT_STATUSES:
                    return await _read_response(response, config)
                location = response.headers.get("Location")
                if not location:
                    return Fetched(reason=RejectReason.HTTP_3XX, status=response.status)
                current = str(response.url.join(URL(location)))
        return Fetched(reason=RejectReason.TOO_MANY_REDIRECTS)
    except TimeoutError:  # before OSError: asyncio's and aiohttp's timeouts are OSErrors too
        return Fetched(reason=RejectReason.TIMEOUT, retry=True)
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, BlockedAddressError):
            return Fetched(reason=RejectReason.BLOCKED_ADDRESS)
        return Fetched(reason=RejectReason.CONNECTION_ERROR)  # a dead domain stays dead
    except ValueError:  # aiohttp.InvalidURL and its kin, a Location yarl cannot parse
        return Fetched(reason=RejectReason.INVALID_URL)
    except aiohttp.ClientSSLError:
        return Fetched(reason=RejectReason.CONNECTION_ERROR)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError):
        return Fetched(reason=RejectReason.CONNECTION_ERROR, retry=True)  # resets, refused, cut bodies
    except Exception:  # noqa: BLE001 - a hostile server can provoke anything from a client library
        return Fetched(reason=RejectReason.CONNECTION_ERROR)


async def _read_response(response: aiohttp.ClientResponse, config: DownloadConfig) -> Fetched:
    status = response.status
    if status == 429 or status >= 500:
        reason = RejectReason.HTTP_429 if status == 429 else RejectReason.HTTP_5XX
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        return Fetched(reason=reason, status=status, retry=True, retry_after=wait)
    if status == 408:
        return Fetched(reason=RejectReason.HTTP_4XX, status=status, retry=True)
    if status == 404:
        return Fetched(reason=RejectReason.HTTP_404, status=status)
    if status >= 400:
        return Fetched(reason=RejectReason.HTTP_4XX, status=status)
    if not 200 <= status < 300:
        return Fetched(reason=RejectReason.HTTP_3XX, status=status)
    if config.respect_opt_out and opted_out(response.headers, config.user_agent.split("/", 1)[0].strip().lower()):
        return Fetched(reason=RejectReason.OPTED_OUT, status=status)
    if response.content_length is not None and response.content_length > config.max_bytes:
        return Fetched(reason=RejectReason.TOO_LARGE, status=status)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > config.max_bytes:
            return Fetched(reason=RejectReason.TOO_LARGE, status=status)
        chunks.append(chunk)
    return Fetched(data=b"".join(chunks), status=status)
