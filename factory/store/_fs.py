"""Where a store home lives and how to reach it: the one place that turns ``Settings``
into ``pyarrow.fs`` filesystems and Lance storage options.

A home is a local folder or a URI (``file://``, ``s3://``, ``gs://``). Checking a home's
shape (``check_home``) costs no I/O, so bad input fails before anything is written.
The first use of a remote home probes its bucket once per process, with a short
connect timeout and no retries, so an unreachable endpoint, a missing bucket or
refused credentials fail within seconds as one ``StoreHomeError`` that names the home,
instead of hanging in a client's retry loop or surfacing as a raw Arrow error.

Object stores have no rename. On S3, blobs are uploaded as multipart uploads that
show nothing at a key until they are verified and completed (see ``_s3put``), through
the boto3 client ``s3_client`` builds from the same settings. Other object stores
(``gs://``) take ``publish_object``: the writer uploads under a temporary key, the
upload's size is checked against what was hashed, and a server-side copy puts it at
its final key in one step, so a reader never sees a partial object there. Even small
blobs take that path: an Arrow output stream completes its upload when it is closed
or destroyed, also after an error or an interrupt, so writing at the final key could
publish a truncated object.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from factory.errors import FactorySystemError, StoreHomeError

if TYPE_CHECKING:
    from pyarrow import fs as pafs

    from factory.settings import Settings

__all__ = [
    "check_home",
    "filesystem",
    "is_object_store",
    "join",
    "lance_options",
    "open_upload",
    "publish_object",
    "reset_cache",
    "s3_client",
    "s3_client_arguments",
    "s3_filesystem_arguments",
    "scheme_of",
]

# Schemes a home may use: what pyarrow.fs resolves (and Lance reads) that can hold a store.
_SCHEMES = {"file", "s3", "gs", "gcs"}
_BUCKETED = {"s3", "gs", "gcs"}
_RETRIES = 5  # attempts per request once the home is known to be reachable (throttling, 5xx)
# How long a request may go without a byte moving. The SDK's default (3 s) is shorter
# than a server-side copy of a large object takes: the server answers only at its end.
_REQUEST_TIMEOUT_S = 300.0
# Bytes an upload may have in flight. Arrow sends parts on background threads without
# a bound of its own, so a source read faster than the network would pile up in memory
# (a 256 MiB put to a slow server peaked at 350 MiB RSS); waiting for the parts in
# flight at each window keeps it near this, with several parts still on the wire.
UPLOAD_WINDOW = 64 << 20
_DEFAULT_REGION = "us-east-1"  # what S3-compatible servers expect when nobody says

_lock = threading.Lock()
_filesystems: dict[tuple, pafs.FileSystem] = {}
_clients: dict[tuple, object] = {}
_session = None  # boto3's, made on first use
# Connections a boto3 client keeps: at least the parts an upload sends at once (``_s3put``).
_CLIENT_CONNECTIONS = 16
_probed: set[tuple] = set()


def scheme_of(home: str) -> str:
    """``file`` for a local path, else the URI's scheme, lower-cased."""
    return home.split("://", 1)[0].lower() if "://" in home else "file"


def is_object_store(home: str) -> bool:
    return scheme_of(home) in _BUCKETED


def join(home: str, *parts: str) -> str:
    out = home.rstrip("/")
    for part in parts:
        out = out + "/" + part
    return out


def check_home(home: str) -> str:
    """``home`` as the store will use it (an absolute path or a URI), or ``StoreHomeError``.

    Costs no network I/O: only the shape of the URI and, for a local home, whether a
    file stands where the folder should be.
    """
    if not isinstance(home, str) or not home.strip():
        raise StoreHomeError("the store home is empty: give a folder or an s3:// or gs:// URI (--home or FACTORY_HOME)", "")
    if "://" not in home:
        path = os.path.abspath(os.path.expanduser(home))
        _check_local(home, path)
        return path
    scheme = scheme_of(home)
    if scheme not in _SCHEMES:
        raise StoreHomeError(
            f"store home {home}: unknown scheme {scheme!r}; give a folder, or a file://, s3:// or gs:// URI", home
        )
    rest = home.split("://", 1)[1]
    if scheme == "file":
        _check_local(home, os.path.abspath(rest or "/"))
        return "file://" + os.path.abspath(rest or "/").rstrip("/")
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise StoreHomeError(f"store home {home} names no bucket: write it as {scheme}://BUCKET/PREFIX", home)
    return f"{scheme}://{rest.rstrip('/')}"


def _check_local(home: str, path: str) -> None:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        where = "is a file" if probe == path else f"lies below the file {probe}"
        raise StoreHomeError(
            f"store home {home} {where}, not a folder: give a folder (it is created when missing)", home
        )


# -- settings to client arguments (the one place) ---------------------------------------

def _endpoint(settings: Settings) -> tuple[str, str] | None:
    """``(scheme, host[:port][/path])`` of the configured S3 endpoint, if any."""
    if not settings.s3_endpoint:
        return None
    raw = settings.s3_endpoint if "://" in settings.s3_endpoint else "https://" + settings.s3_endpoint
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StoreHomeError(
            f"the S3 endpoint {settings.s3_endpoint!r} is not an http(s) URL: set FACTORY_S3_ENDPOINT "
            "(or AWS_ENDPOINT_URL) to e.g. http://minio:9000", settings.s3_endpoint
        )
    return parts.scheme, parts.netloc + parts.path.rstrip("/")


def _s3_fields(settings: Settings) -> dict[str, str]:
    """What every S3 client gets from the settings: endpoint URL, region and static keys (only those set)."""
    fields = {}
    endpoint = _endpoint(settings)
    if endpoint is not None:
        fields["endpoint"] = f"{endpoint[0]}://{endpoint[1]}"
    region = settings.s3_region or (_DEFAULT_REGION if endpoint is not None else None)
    if region:
        fields["region"] = region
    if settings.s3_access_key and settings.s3_secret_key:
        fields["access_key"] = settings.s3_access_key
        fields["secret_key"] = settings.s3_secret_key
        if settings.s3_session_token:
            fields["session_token"] = settings.s3_session_token
    return fields


# Each client's names for the common fields.
_ARROW_NAMES = {"region": "region", "access_key": "access_key", "secret_key": "secret_key",
                "session_token": "session_token"}
_BOTO3_NAMES = {"endpoint": "endpoint_url", "region": "region_name", "access_key": "aws_access_key_id",
                "secret_key": "aws_secret_access_key", "session_token": "aws_session_token"}
_LANCE_NAMES = {"endpoint": "aws_endpoint", "region": "aws_region", "access_key": "aws_access_key_id",
                "secret_key": "aws_secret_access_key", "session_token": "aws_session_token"}


def _renamed(fields: dict[str, str], names: dict[str, str]) -> dict:
    return {names[k]: v for k, v in fields.items() if k in names}


def s3_filesystem_arguments(settings: Settings, *, attempts: int = _RETRIES) -> dict:
    """Keyword arguments of ``pyarrow.fs.S3FileSystem`` for these settings.

    Credentials left unset fall to the AWS SDK's own chain (environment, profiles,
    instance roles, IRSA on Kubernetes).
    """
    from pyarrow import fs as pafs

    fields = _s3_fields(settings)
    args: dict = {
        "connect_timeout": settings.s3_connect_timeout_s,
        "request_timeout": _REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        **_renamed(fields, _ARROW_NAMES),
    }
    if "endpoint" in fields:
        args["scheme"], args["endpoint_override"] = fields["endpoint"].split("://", 1)
    return args


def s3_client_arguments(settings: Settings) -> dict:
    """Keyword arguments of ``boto3.client("s3", ...)`` for the same endpoint and credentials."""
    from botocore.config import Config

    config = Config(connect_timeout=settings.s3_connect_timeout_s, read_timeout=_REQUEST_TIMEOUT_S,
                    retries={"max_attempts": _RETRIES, "mode": "standard"},
                    max_pool_connections=_CLIENT_CONNECTIONS)
    return {"config": config, **_renamed(_s3_fields(settings), _BOTO3_NAMES)}


def s3_client(settings: Settings, *, bucket: str | None = None, label: str | None = None):
    """A boto3 S3 client for these settings, shared per process (boto3 clients are thread-safe).

    With ``bucket``, the bucket is probed first, once per process, as ``filesystem``
    does: the blob writer reaches S3 through boto3 alone, without loading pyarrow.
    """
    global _session
    args = s3_client_arguments(settings)
    key = tuple(sorted((k, v) for k, v in args.items() if k != "config")) + (settings.s3_connect_timeout_s,)
    with _lock:
        client = _clients.get(key)
        if client is None:
            import boto3

            # One session of our own: boto3's default one is not safe to share between
            # threads, and a session loads the service model once for all its clients.
            _session = _session or boto3.session.Session()
            client = _clients[key] = _session.client("s3", **args)
    if bucket is not None:
        _probe(_probe_key(settings), bucket, label or f"s3://{bucket}", settings, lambda: _BotoProbe(settings, args))
    return client


class _BotoProbe:
    """The probe's view of a boto3 client that gives up fast: one attempt, short timeouts."""

    def __init__(self, settings: Settings, args: dict):
        from botocore.config import Config

        quick = Config(retries={"max_attempts": 1, "mode": "standard"},
                       read_timeout=max(5.0, 2 * settings.s3_connect_timeout_s))
        with _lock:
            self.client = _session.client("s3", **{**args, "config": args["config"].merge(quick)})

    def bucket_exists(self, bucket: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                return False
            raise OSError(f"{code}: {exc}") from exc
        except BotoCoreError as exc:  # no connection, a timeout, no credentials
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        return True


def lance_options(home: str, settings: Settings) -> dict[str, str] | None:
    """Lance's ``storage_options`` for datasets under ``home``; ``None`` where Lance needs none.

    Lance commits a new version on S3 with a conditional put (``If-None-Match``), so
    concurrent writers of one dataset cannot overwrite each other's commits; the
    server must honour that header (AWS S3, MinIO, moto do).
    """
    if scheme_of(home) != "s3":
        return None
    options = {"connect_timeout": f"{settings.s3_connect_timeout_s:g}s", **_renamed(_s3_fields(settings), _LANCE_NAMES)}
    if options.get("aws_endpoint", "").startswith("http://"):
        options["allow_http"] = "true"
    return options


# -- filesystems --------------------------------------------------------------------------

def filesystem(home: str, settings: Settings, *, label: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``home`` (a path or URI below a home) and the path on it.

    Filesystems are shared per process and configuration; a remote bucket is probed on
    first use (see the module docstring). Errors name ``label`` (the store home) if given.
    """
    label = label or home
    from pyarrow import fs as pafs

    scheme = scheme_of(home)
    if scheme == "file":
        path = home.split("://", 1)[1] if "://" in home else home
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if scheme not in _SCHEMES:
        check_home(home)  # raises, naming the scheme
    rest = home.split("://", 1)[1].rstrip("/")
    bucket = rest.split("/", 1)[0]
    if scheme == "s3":
        args = s3_filesystem_arguments(settings)
        key = ("s3", *sorted((k, repr(v)) for k, v in args.items() if k != "retry_strategy"))
        with _lock:
            fs = _filesystems.get(key)
            if fs is None:
                fs = _filesystems[key] = pafs.S3FileSystem(**args)
        _probe(_probe_key(settings), bucket, label, settings, lambda: _ArrowProbe(pafs.S3FileSystem(**_quick(settings))))
        return fs, rest
    key = (scheme, bucket)
    with _lock:
        fs = _filesystems.get(key)
    if fs is None:
        try:
            fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
        except (OSError, ValueError) as exc:
            raise StoreHomeError(f"store home {label} cannot be opened: {_first_line(exc)}", label) from exc
        with _lock:
            fs = _filesystems.setdefault(key, fs)
    _probe(key, bucket, label, settings, lambda: _ArrowProbe(fs))
    return fs, rest


def _quick(settings: Settings) -> dict:
    """Arguments of a client that gives up fast: one attempt, short timeouts (for the probe)."""
    args = s3_filesystem_arguments(settings, attempts=1)
    args["request_timeout"] = max(5.0, 2 * settings.s3_connect_timeout_s)
    return args


def _probe_key(settings: Settings) -> tuple:
    """What makes two S3 clients reach the same buckets the same way (a probe holds for both)."""
    return ("s3", *sorted(_s3_fields(settings).items()))


class _ArrowProbe:
    """The probe's view of a ``pyarrow.fs`` filesystem."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs

    def bucket_exists(self, bucket: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(bucket).type != pafs.FileType.NotFound


def _probe(key: tuple, bucket: str, home: str, settings: Settings, quick) -> None:
    """Check once per process that ``bucket`` answers, failing fast and in words.

    ``quick()`` builds a client that gives up fast, with ``bucket_exists(bucket)``
    raising ``OSError`` when the store cannot be asked.
    """
    if (key, bucket) in _probed:
        return
    where = f" at {settings.s3_endpoint}" if settings.s3_endpoint and key[0] == "s3" else ""
    try:
        exists = quick().bucket_exists(bucket)
    except OSError as exc:
        text = str(exc)
        if any(word in text for word in ("ACCESS_DENIED", "403", "AccessDenied", "InvalidAccessKeyId",
                                         "SignatureDoesNotMatch", "NoCredentialsError")):
            hint = "the credentials were refused: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the node's role)"
        elif any(word in text for word in ("NETWORK_CONNECTION", "curlCode", "EndpointConnectionError",
                                           "ConnectTimeoutError", "ReadTimeoutError")) or "timed out" in text.lower():
            hint = "the object store cannot be reached: check FACTORY_S3_ENDPOINT (or AWS_ENDPOINT_URL) and the network"
        else:
            hint = "check the endpoint, the credentials and the bucket"
        raise StoreHomeError(f"store home {home}{where}: {hint} ({_first_line(exc)})", home) from exc
    if not exists:
        raise StoreHomeError(
            f"store home {home}{where}: bucket {bucket!r} does not exist; create it (e.g. 'aws s3 mb s3://{bucket}') "
            "or fix the home", home
        )
    with _lock:
        _probed.add((key, bucket))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# -- writing and publishing on object storage ---------------------------------------------

class BoundedUpload:
    """An object-store output stream that never holds more than ``UPLOAD_WINDOW`` bytes unsent."""

    def __init__(self, stream, window: int | None = None):
        self._stream = stream
        self._window = window or UPLOAD_WINDOW
        self._unsent = 0

    def write(self, data) -> int:
        n = self._stream.write(data)
        self._unsent += len(data)
        if self._unsent >= self._window:
            self._stream.flush()  # returns once the parts in flight are uploaded
            self._unsent = 0
        return n

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> BoundedUpload:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_upload(fs: pafs.FileSystem, path: str) -> BoundedUpload:
    """A streamed upload to ``path`` on an object store, with bounded memory (see ``UPLOAD_WINDOW``)."""
    return BoundedUpload(fs.open_output_stream(path))


def publish_object(fs: pafs.FileSystem, tmp: str, final: str, size: int | None) -> None:
    """Make the fully written object at ``tmp`` visible at ``final`` in one step; remove ``tmp``.

    ``size`` is what the writer hashed; an upload of any other size is refused (the
    temporary object is removed and the put can be retried), so what appears at
    ``final`` is exactly the hashed bytes.
    """
    uploaded = fs.get_file_info(tmp).size
    if size is not None and uploaded != size:
        _delete(fs, tmp)
        raise FactorySystemError(
            f"the upload to {tmp} holds {uploaded} bytes where {size} were written and hashed; "
            "nothing was published: retry the put"
        )
    try:
        fs.copy_file(tmp, final)
    except OSError as exc:  # the copy is one step: it either made the whole object or nothing
        raise FactorySystemError(f"publishing {final} failed ({_first_line(exc)}); nothing was published: retry the put") from exc
    finally:
        _delete(fs, tmp)


def _delete(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def reset_cache() -> None:
    """Forget shared filesystems and probes (tests that stop a server and start another)."""
    with _lock:
        _filesystems.clear()
        _clients.clear()
        _probed.clear()
