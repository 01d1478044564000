"""A throw-away Orthanc PACS on loopback for the PACS tests (Debian package ``orthanc``).

Started as a subprocess with a temporary JSON configuration on free ports, storage in a temporary folder,
``DicomCheckCalledAet`` on (a wrong called AE title is rejected) and the test's AE title registered as a
modality (so C-FIND and C-GET from it are allowed); stopped when the test module is done.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC_AET = "PSO-TEST-PACS"
CLIENT_AET = "PSO-TEST-SCU"
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class OrthancServer:
    host: str
    port: int
    http_port: int
    aet: str
    client_aet: str
    log: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(folder: Path, dicom_port: int, http_port: int) -> dict:
    return {
        "Name": "monai-pso-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {"monai-pso-test": [CLIENT_AET, "127.0.0.1", free_port()]},
        "SaveJobs": False,
        "DicomAssociationCloseDelay": 0,
    }


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"Orthanc did not listen on port {port} within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running_orthanc(folder: Path) -> Iterator[OrthancServer]:
    """Start Orthanc with its storage under ``folder``; stop it on exit."""
    binary = shutil.which("Orthanc")
    if binary is None:
        raise FileNotFoundError("Orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, dicom_port, http_port), indent=2))
    log = folder / "orthanc.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, str(config)], stdout=output, stderr=subprocess.STDOUT, cwd=folder)
    try:
        _wait_until_listening(process, dicom_port, log)
        yield OrthancServer("127.0.0.1", dicom_port, http_port, ORTHANC_AET, CLIENT_AET, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
