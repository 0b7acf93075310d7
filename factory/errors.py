"""The one error hierarchy of factory.

``FactoryError`` is the root. ``UserError`` means bad input: the message says what
was wrong and how to fix it, and the CLI exits 2. ``FactorySystemError`` means
something outside the caller's control failed and a retry may succeed. Each
concrete error also inherits the builtin it refines, so ``except KeyError`` keeps
working. Every error pickles (Ray sends them between processes): constructors pass
all their arguments to ``super().__init__``.
"""

from __future__ import annotations

__all__ = [
    "FactoryError",
    "UserError",
    "FactorySystemError",
    "InvalidInputError",
    "NotFoundError",
    "SchemaChangeError",
    "RefConflictError",
    "CorruptBlobError",
    "ContractViolationError",
    "UnsafePackageError",
    "CatalogVersionError",
    "MetaConflictError",
    "RefProtectedError",
    "RunInProgressError",
    "StoreHomeError",
    "VerificationError",
    "InvalidRequestError",
    "NotAdmittedError",
    "CatalogUnavailableError",
    "CatalogNotReadyError",
    "StoreIdentityError",
    "SignalsUnavailableError",
    "AdmissionDeniedError",
]


class FactoryError(Exception):
    """Root of every error factory raises on purpose."""

    code = "FACTORY"
    retryable = False

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UserError(FactoryError):
    """Bad input, a denied policy or a violated contract: the caller must change something."""

    code = "USER"


class FactorySystemError(FactoryError):
    """A failure outside the caller's control (storage, cluster); retrying may succeed."""

    code = "SYSTEM"
    retryable = True


class InvalidInputError(UserError, ValueError):
    """An argument, file or table that cannot be used as given."""

    code = "INVALID_INPUT"


class NotFoundError(UserError, KeyError):
    """A digest, ref or name that the store does not hold."""

    code = "NOT_FOUND"


class SchemaChangeError(UserError, ValueError):
    """A new version whose schema differs from the name's current one, without consent."""

    code = "SCHEMA_CHANGE"


class RefConflictError(UserError):
    """A compare-and-swap on a ref lost: someone else moved it first."""

    code = "REF_CONFLICT"

    def __init__(self, message: str, name: str = "", expected: str | None = None, actual: str | None = None):
        super().__init__(message, name, expected, actual)
        self.name = name
        self.expected = expected
        self.actual = actual


class CorruptBlobError(FactoryError, IOError):
    """Stored bytes that no longer hash to their digest; they are never handed out."""

    code = "CORRUPT_BLOB"

    def __init__(self, message: str, digest: str = "", location: str = ""):
        super().__init__(message, digest, location)
        self.digest = digest
        self.location = location


class ContractViolationError(UserError, ValueError):
    """A model, package or request that does not satisfy its contract."""

    code = "CONTRACT_VIOLATION"


class UnsafePackageError(UserError):
    """A package holding something that could run code when loaded (pickle and friends)."""

    code = "UNSAFE_PACKAGE"


class CatalogVersionError(UserError):
    """A catalog whose schema is newer than this code knows: upgrade factory, never downgrade data."""

    code = "CATALOG_VERSION"

    def __init__(self, message: str, found: int = 0, supported: int = 0):
        super().__init__(message, found, supported)
        self.found = found
        self.supported = supported


class MetaConflictError(UserError):
    """A compare-and-swap on a catalog metadata key lost: it holds another value."""

    code = "META_CONFLICT"

    def __init__(self, message: str, key: str = "", expected: str | None = None, actual: str | None = None):
        super().__init__(message, key, expected, actual)
        self.key = key
        self.expected = expected
        self.actual = actual


class RefProtectedError(UserError, PermissionError):
    """A move of a protected ref by an actor its rule does not list; the refusal is recorded."""

    code = "REF_PROTECTED"

    def __init__(self, message: str, name: str = "", actor: str = "", pattern: str = ""):
        super().__init__(message, name, actor, pattern)
        self.name = name
        self.actor = actor
        self.pattern = pattern


class RunInProgressError(UserError):
    """A run with this key is still running under a live owner, or this process no longer owns it."""

    code = "RUN_IN_PROGRESS"

    def __init__(self, message: str, run_id: str = "", owner: str = ""):
        super().__init__(message, run_id, owner)
        self.run_id = run_id
        self.owner = owner


class StoreHomeError(UserError, ValueError):
    """A store home that cannot be used: an unknown scheme, a file, an unreachable or refused endpoint."""

    code = "STORE_HOME"

    def __init__(self, message: str, home: str = ""):
        super().__init__(message, home)
        self.home = home


class VerificationError(UserError, ValueError):
    """A signature, envelope, checkpoint or proof that does not verify against the trusted keys."""

    code = "VERIFICATION_FAILED"


class InvalidRequestError(ContractViolationError):
    """An inference request that its model's contract refuses; served as an HTTP 4xx.

    ``input`` names the offending input (``None`` when the problem is the request as a
    whole), ``status`` is the HTTP status a server answers with (400, or 413 for a body
    over the size limit).
    """

    code = "INVALID_REQUEST"

    def __init__(self, message: str, input: str | None = None, status: int = 400):
        super().__init__(message, input, status)
        self.input = input
        self.status = status


class NotAdmittedError(UserError, PermissionError):
    """A package that its environment's policy does not admit; ``missing`` names what it lacks."""

    code = "NOT_ADMITTED"

    def __init__(self, message: str, digest: str = "", env: str = "", missing: tuple[str, ...] = ()):
        super().__init__(message, digest, env, tuple(missing))
        self.digest = digest
        self.env = env
        self.missing = tuple(missing)


class CatalogUnavailableError(FactorySystemError, ConnectionError):
    """The catalog's server could not be reached, or kept failing, for longer than the retry window.

    ``in_doubt`` means the connection was lost while a write was being committed: it may or
    may not have happened, so re-read before writing again.
    """

    code = "CATALOG_UNAVAILABLE"

    def __init__(self, message: str, location: str = "", in_doubt: bool = False):
        super().__init__(message, location, in_doubt)
        self.location = location
        self.in_doubt = in_doubt


class CatalogNotReadyError(UserError):
    """A server catalog that must be set up (``factory init``) or upgraded (``factory catalog migrate``) first."""

    code = "CATALOG_NOT_READY"

    def __init__(self, message: str, location: str = "", found: int = 0, needed: int = 0):
        super().__init__(message, location, found, needed)
        self.location = location
        self.found = found
        self.needed = needed


class StoreIdentityError(UserError):
    """A store home and a catalog that belong to different stores (or a catalog missing for a home
    that holds data): the message names the catalog to point at."""

    code = "STORE_IDENTITY"

    def __init__(self, message: str, home: str = "", catalog: str = ""):
        super().__init__(message, home, catalog)
        self.home = home
        self.catalog = catalog


class SignalsUnavailableError(FactorySystemError, ConnectionError):
    """The metrics a rollout judges by could not be read (Prometheus down or refusing a query); retry later."""

    code = "SIGNALS_UNAVAILABLE"


class AdmissionDeniedError(UserError, PermissionError):
    """A package that lacks an attestation its environment requires; the message says which."""

    code = "ADMISSION_DENIED"

    def __init__(self, message: str, digest: str = "", environment: str = "", missing: tuple[str, ...] = ()):
        super().__init__(message, digest, environment, missing)
        self.digest = digest
        self.environment = environment
        self.missing = tuple(missing)
