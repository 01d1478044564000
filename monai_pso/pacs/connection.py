"""Where a PACS is, and an association with it that fails with one clear :class:`~monai_pso.errors.PacsError`.

Examples
--------
>>> node = PacsNode.parse("pacs.hospital.org:104", calling_aet="MONAI_PSO", called_aet="PACS")
>>> str(node), node.port
('PACS@pacs.hospital.org:104', 104)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_pso.errors import PacsError

try:
    from pynetdicom import AE, build_role, evt
    from pynetdicom.association import Association
except ImportError as missing:  # an optional dependency: say how to get it instead of a traceback
    raise PacsError(f"PACS networking needs pynetdicom ({missing}): pip install 'monai-pso[pacs]'") from missing

#: Called AE title when none is given (many PACS accept any; Orthanc does unless DicomCheckCalledAet).
DEFAULT_CALLED_AET = "ANY-SCP"
#: Seconds to wait for the TCP connection, the association answer, and each DIMSE message.
CONNECT_TIMEOUT, ASSOCIATION_TIMEOUT, MESSAGE_TIMEOUT = 10.0, 30.0, 120.0
#: Transfer syntaxes offered for every requested SOP class (monai-pso writes Explicit VR Little Endian).
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass(frozen=True)
class PacsNode:
    """A PACS (host, port, its AE title) and the AE title monai-pso calls it as.

    Parameters
    ----------
    host, port
        Network address of the PACS's DICOM service.
    calling_aet
        Our AE title (the PACS must know it to answer C-FIND / C-GET).
    called_aet
        The PACS's AE title.
    """

    host: str
    port: int
    calling_aet: str
    called_aet: str = DEFAULT_CALLED_AET

    @classmethod
    def parse(cls, address: str, calling_aet: str, called_aet: str | None = None) -> PacsNode:
        """Build from ``HOST:PORT`` and AE titles, checking each (PacsError naming the bad one)."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise PacsError(f"--pacs {address!r}: expected HOST:PORT, e.g. pacs.hospital.org:104")
        titles = {"--aet": calling_aet, "--called-aet": called_aet or DEFAULT_CALLED_AET}
        for option, title in titles.items():
            if not title.strip() or len(title) > 16 or "\\" in title or not title.isprintable():
                raise PacsError(f"{option} {title!r}: an AE title is 1 to 16 printable characters without backslash")
        return cls(host.strip("[]"), int(port), titles["--aet"], titles["--called-aet"])

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@contextmanager
def associate(
    node: PacsNode,
    sop_classes: Sequence[str],
    *,
    scp_roles: Sequence[str] = (),
    handlers: Sequence[tuple] = (),
) -> Iterator[Association]:
    """An established association with ``node``, released on exit.

    Parameters
    ----------
    node
        The PACS.
    sop_classes
        SOP classes to request (each with :data:`TRANSFER_SYNTAXES`).
    scp_roles
        Of those, the storage classes we accept as SCP (C-GET sub-operations).
    handlers
        pynetdicom event handlers, e.g. ``[(evt.EVT_C_STORE, handle_store)]``.

    Raises
    ------
    PacsError
        One line saying whether the PACS was unreachable, rejected the association (and why), or aborted it.
    """
    ae = AE(ae_title=node.calling_aet)
    ae.connection_timeout, ae.acse_timeout = CONNECT_TIMEOUT, ASSOCIATION_TIMEOUT
    ae.dimse_timeout = ae.network_timeout = MESSAGE_TIMEOUT
    for uid in sop_classes:
        ae.add_requested_context(uid, TRANSFER_SYNTAXES)
    connected: list[bool] = []
    events = [*handlers, (evt.EVT_CONN_OPEN, lambda event: connected.append(True))]
    roles = [build_role(uid, scp_role=True) for uid in scp_roles]
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.called_aet, ext_neg=roles or None, evt_handlers=events)
    except OSError as error:  # the host name does not resolve
        ae.shutdown()
        raise PacsError(f"PACS {node} unreachable: host {node.host!r}: {error.strerror or error}; check --pacs HOST:PORT") from None
    if not assoc.is_established:
        raise PacsError(_why_not_established(node, assoc, bool(connected)))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _why_not_established(node: PacsNode, assoc: Association, connected: bool) -> str:
    if not connected:
        return f"PACS {node} unreachable: {_connection_problem(node)}; check --pacs HOST:PORT and that the PACS is running"
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        reason = f"{answer.result_str}, {answer.source_str}: {answer.reason_str}" if answer is not None else "no reason given"
        return (f"PACS {node} rejected the association ({reason}); check --called-aet {node.called_aet!r} and that "
                f"the PACS knows the calling AE title {node.calling_aet!r}")
    if assoc.is_aborted:
        return f"PACS {node} aborted the association (it accepted none of the requested SOP classes, or closed the connection)"
    return f"PACS {node} did not answer the association request within {ASSOCIATION_TIMEOUT:.0f} s"


def _connection_problem(node: PacsNode) -> str:
    """The operating system's reason a TCP connection to ``node`` fails (pynetdicom only logs it)."""
    try:
        with socket.create_connection((node.host, node.port), timeout=CONNECT_TIMEOUT):
            return "the connection was closed before the association request"
    except OSError as error:
        return error.strerror or type(error).__name__


def check_status(status, what: str, assoc: Association) -> int:
    """The DIMSE status code of a response, or PacsError when there was none (aborted association, timeout).

    A PACS that accepts an association but not the operation (e.g. C-FIND or C-GET from an AE title it does
    not know, as Orthanc does) aborts the association; the message points at that first.
    """
    if status is not None and "Status" in status:
        return int(status.Status)
    calling = assoc.requestor.ae_title
    raise PacsError(f"{what}: no answer from the PACS (association aborted, or no response within {MESSAGE_TIMEOUT:.0f} s); "
                    f"does the PACS allow this operation from the calling AE title {calling!r}?")
