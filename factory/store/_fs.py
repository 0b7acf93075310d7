"""Where a store home lives and how to reach it: the one place that turns ``Settings``
into ``pyarrow.fs`` filesystems and Lance storage options.

A home is a local folder or a URI (``file://``, ``s3://``, ``gs://``). Checking a home's
shape (``check_home``) costs no I/O, so bad input fails before anything is written.
The first use of a remote home probes its bucket once per process, with a short
connect timeout and no retries, so an unreachable endpoint, a missing bucket or
refused credentials fail within seconds as one ``StoreHomeError`` that names the home,
instead of hanging in a client's retry loop or surfacing as a raw Arrow error.

Object stores have no rename. ``publish_object`` makes a blob visible the way the
rename does on a disk: the writer uploads under a temporary key, the upload's size is
checked against what was hashed, and a server-side copy puts it at its final key in
one step (S3's CopyObject, or a multipart copy above S3's 5 GiB single-copy limit),
so a reader never sees a partial object there. Even small blobs take this path: an
Arrow output stream completes its upload when it is closed or destroyed, also after
an error or an interrupt, so writing at the final key could publish a truncated object.
On S3, a blob whose bytes can be read twice (a file, memory) skips the copy: it is
uploaded in parts straight to its final key through the boto3 client of ``s3_client``
and completed only once verified (see ``_s3put``).
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
    "SINGLE_COPY_LIMIT",
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
SINGLE_COPY_LIMIT = 5 << 30  # S3 refuses a CopyObject of a larger source
_COPY_PART = 512 << 20  # parts of a multipart copy: 10,000 of them reach S3's 5 TiB object limit
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

# Connections a boto3 client keeps open: at least the parts an upload sends at once (``_s3put``).
_CLIENT_CONNECTIONS = 16

_lock = threading.Lock()
_filesystems: dict[tuple, pafs.FileSystem] = {}
_clients: dict[tuple, object] = {}
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
                    retries={"max_attempts": _RETRIES, "mode": "standard"}, max_pool_connections=_CLIENT_CONNECTIONS)
    return {"config": config, **_renamed(_s3_fields(settings), _BOTO3_NAMES)}


def s3_client(settings: Settings):
    """A boto3 S3 client for these settings, shared per process (boto3 clients are thread-safe).

    It does not probe the bucket: callers reach the home through ``filesystem`` first.
    """
    fields = _s3_fields(settings)
    key = (*sorted(fields.items()), settings.s3_connect_timeout_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            import boto3

            # A session of our own: boto3's default one is not safe to share between threads.
            client = _clients[key] = boto3.session.Session().client("s3", **s3_client_arguments(settings))
    return client


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
        _probe(key, bucket, label, settings, lambda: pafs.S3FileSystem(**_quick(settings)))
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
    _probe(key, bucket, label, settings, lambda: fs)
    return fs, rest


def _quick(settings: Settings) -> dict:
    """Arguments of a client that gives up fast: one attempt, short timeouts (for the probe)."""
    args = s3_filesystem_arguments(settings, attempts=1)
    args["request_timeout"] = max(5.0, 2 * settings.s3_connect_timeout_s)
    return args


def _probe(key: tuple, bucket: str, home: str, settings: Settings, quick) -> None:
    """Check once per process that ``bucket`` answers, failing fast and in words."""
    from pyarrow import fs as pafs

    if (key, bucket) in _probed:
        return
    where = f" at {settings.s3_endpoint}" if settings.s3_endpoint and key[0] == "s3" else ""
    try:
        info = quick().get_file_info(bucket)
    except OSError as exc:
        text = str(exc)
        if "ACCESS_DENIED" in text or "403" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            hint = "the credentials were refused: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the node's role)"
        elif "NETWORK_CONNECTION" in text or "curlCode" in text or "timed out" in text.lower():
            hint = "the object store cannot be reached: check FACTORY_S3_ENDPOINT (or AWS_ENDPOINT_URL) and the network"
        else:
            hint = "check the endpoint, the credentials and the bucket"
        raise StoreHomeError(f"store home {home}{where}: {hint} ({_first_line(exc)})", home) from exc
    if info.type == pafs.FileType.NotFound:
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


def publish_object(fs: pafs.FileSystem, tmp: str, final: str, size: int | None, settings: Settings) -> None:
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
        if uploaded is not None and uploaded > SINGLE_COPY_LIMIT and type(fs).__name__ == "S3FileSystem":
            _multipart_copy(tmp, final, settings)
        else:
            fs.copy_file(tmp, final)
    except OSError as exc:  # the copy is one step: it either made the whole object or nothing
        raise FactorySystemError(f"publishing {final} failed ({_first_line(exc)}); nothing was published: retry the put") from exc
    finally:
        _delete(fs, tmp)


def _multipart_copy(tmp: str, final: str, settings: Settings) -> None:
    """Server-side copy in parts (UploadPartCopy), for sources S3 will not copy in one request.

    The object appears at ``final`` only when the upload completes, in one step.
    """
    try:
        import boto3
        from boto3.s3.transfer import TransferConfig
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise FactorySystemError(
            f"publishing {final} needs a multipart copy (over 5 GiB), which needs boto3: pip install boto3"
        ) from exc
    src_bucket, src_key = tmp.split("/", 1)
    dst_bucket, dst_key = final.split("/", 1)
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", **s3_client_arguments(settings))
    part = max(_COPY_PART, 5 << 20)
    try:
        client.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key,
                    Config=TransferConfig(multipart_threshold=SINGLE_COPY_LIMIT, multipart_chunksize=part))
    except (BotoCoreError, ClientError) as exc:
        raise OSError(f"multipart copy to {final}: {exc}") from exc


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
