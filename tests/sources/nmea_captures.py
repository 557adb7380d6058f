"""Real NMEA 0183 captures for the tests and benchmarks: fetched, never committed.

The captures are regression logs of the gpsd project (test/daemon/, "Copyright (c)
2010 by the GPSD project", BSD-2-Clause), taken from Debian's `gpsd` source package:
apt fetches it from the archive this machine already uses (its `deb` sources read as
`deb-src`, in a private apt directory, so the system's apt setup is not touched).
They are kept in .venv/cache/nmea/ after the first run.

- bu353s4.nmea: bu353s4.log, first 51 lines. GlobalSat BU-353-S4 (SiRF IV),
  Hamilton NZ, 2014: a fix throughout; GGA, GSA, GSV, RMC.
- bu353-glonass.nmea: bu353-glonass.log, first 45 lines. BU-353 GLONASS (SiRF III),
  Moscow, 2014: GN RMC/GSA with GP GGA, ZDA, CRLF line ends.
- mtk3301-coldstart.nmea: mtk-3301.log, whole. FV-M11 (MTK-3301), Enschede NL, 2008:
  power-up to first fix, PMTK sentences, three `$POLYN` lines without a checksum.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv" / "cache" / "nmea"
CAPTURES = {"bu353s4.nmea": ("bu353s4.log", 51),
            "bu353-glonass.nmea": ("bu353-glonass.log", 45),
            "mtk3301-coldstart.nmea": ("mtk-3301.log", None)}


class CapturesUnavailable(RuntimeError):
    """The captures could not be fetched; the message says what to do."""


def capture_dir() -> Path:
    """The directory holding the captures, fetching them on first use."""
    if all((CACHE / name).is_file() for name in CAPTURES):
        return CACHE
    with tempfile.TemporaryDirectory(prefix="edgeledger-gpsd-") as tmp:
        tarball = _fetch_gpsd_source(Path(tmp))
        logs = {log: (name, lines) for name, (log, lines) in CAPTURES.items()}
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            for member in tar:
                log = member.name.rpartition("/test/daemon/")[2]
                if "/test/daemon/" in member.name and log in logs:
                    name, lines = logs.pop(log)
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if lines is not None:
                        data = b"".join(data.splitlines(keepends=True)[:lines])
                    (CACHE / name).write_bytes(data)
        if logs:
            raise CapturesUnavailable(f"{tarball.name} has no test/daemon/{sorted(logs)}")
    return CACHE


def _fetch_gpsd_source(tmp: Path) -> Path:
    """Download Debian's gpsd source package into `tmp`; the path of its orig tarball."""
    if shutil.which("apt-get") is None:
        raise CapturesUnavailable(_HELP.format(why="there is no apt-get"))
    parts = tmp / "sources"
    parts.mkdir()
    _write_deb_src(parts)
    for sub in ("lists/partial", "cache/archives/partial"):
        (tmp / sub).mkdir(parents=True)
    apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={tmp / 'none.list'}",
           "-o", f"Dir::Etc::SourceParts={parts}", "-o", f"Dir::State::Lists={tmp / 'lists'}",
           "-o", f"Dir::Cache={tmp / 'cache'}"]
    for args in (["update"], ["source", "--download-only", "gpsd"]):
        done = subprocess.run([*apt, *args], cwd=tmp, capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            raise CapturesUnavailable(_HELP.format(
                why=f"`apt-get {' '.join(args)}` failed: {done.stderr.strip()[-400:]}"))
    tarballs = sorted(tmp.glob("gpsd_*.orig.tar.*"))
    if not tarballs:
        raise CapturesUnavailable(_HELP.format(why="apt fetched no gpsd orig tarball"))
    return tarballs[0]


def _write_deb_src(parts: Path) -> None:
    """Copy the machine's apt sources as deb-src entries (deb822 and one-line formats)."""
    etc = Path("/etc/apt")
    for i, source in enumerate(sorted((etc / "sources.list.d").glob("*.sources"))):
        text = source.read_text().replace("Types: deb\n", "Types: deb-src\n")
        (parts / f"{i}.sources").write_text(text)
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    lines = [line.replace("deb ", "deb-src ", 1) for path in one_line if path.is_file()
             for line in path.read_text().splitlines() if line.startswith("deb ")]
    (parts / "deb-src.list").write_text("\n".join(lines) + "\n")


_HELP = ("the NMEA tests use real receiver logs from Debian's gpsd source package, and "
         "fetching it failed: {why}. Fix access to the Debian archive, or put gpsd's "
         "test/daemon/bu353s4.log, bu353-glonass.log and mtk-3301.log (as bu353s4.nmea, "
         "bu353-glonass.nmea, mtk3301-coldstart.nmea) into " + str(CACHE))
