"""Where the cluster's programs are: the system's, or Orthanc and its plugins from another Debian root."""

import glob
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orthanc_jobs.cluster import ClusterError

DEBIAN_PACKAGES = "orthanc orthanc-python orthanc-postgresql nginx-light postgresql"


@dataclass
class Binaries:
    orthanc: str
    nginx: str
    postgres_bin: Path
    postgresql_index_plugin: str
    python_plugin: str
    #: How Orthanc is started: the loader and environment of another Debian root (see find_binaries).
    orthanc_prefix: list[str] = field(default_factory=list)
    orthanc_env: dict[str, str] = field(default_factory=dict)

    @property
    def plugins(self) -> list[str]:
        """Orthanc's "Plugins": the PostgreSQL index and the Python plugin of this Orthanc."""
        return [self.postgresql_index_plugin, self.python_plugin]

    def orthanc_command(self, config_path: Path) -> list[str]:
        return [*self.orthanc_prefix, self.orthanc, str(config_path)]


def find_binaries(orthanc_root: Path | None = None) -> Binaries:
    """The system's programs; Orthanc and its plugins from ``orthanc_root`` if given.

    ``orthanc_root`` is another Debian installed in a folder (``scripts/install-orthanc-root.sh`` makes one
    with Orthanc 1.12 from Debian 13): its Orthanc runs through that root's own loader and libraries, and
    its Python plugin on that root's Python, without chroot.
    """
    missing = []
    nginx = shutil.which("nginx") or _first(["/usr/sbin/nginx"])
    postgres_dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    prefix: list[str] = []
    env: dict[str, str] = {}
    if orthanc_root is None:
        orthanc = shutil.which("Orthanc") or _first(["/usr/sbin/Orthanc"])
        plugin_dirs = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins"]
    else:
        root = orthanc_root.resolve()
        orthanc = _first([str(root / "usr/sbin/Orthanc")])
        plugin_dirs = [str(root / "usr/lib/orthanc")]
        loader = _first([str(root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")])
        if loader is None:
            missing.append(f"a Debian root at {root} (its usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)")
        libraries = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
        prefix = [str(loader), "--library-path", libraries]
        env = {"PYTHONHOME": str(root / "usr"), "DCMDICTPATH": str(root / "usr/share/dcmtk/dicom.dic")}
    pg_plugin = _first([f"{d}/libOrthancPostgreSQLIndex.so*" for d in plugin_dirs])
    python_plugin = _first([f"{d}/libOrthancPython.so*" for d in plugin_dirs])
    for what, found in [
        ("Orthanc (package orthanc)", orthanc),
        ("nginx (package nginx-light)", nginx),
        ("PostgreSQL (package postgresql)", postgres_dirs),
        ("Orthanc's PostgreSQL plugin (package orthanc-postgresql)", pg_plugin),
        ("Orthanc's Python plugin (package orthanc-python)", python_plugin),
    ]:
        if not found:
            missing.append(what)
    if missing:
        hint = f"On Debian/Ubuntu: sudo apt-get install {DEBIAN_PACKAGES}"
        if orthanc_root is not None:
            hint = f"Make that root with: scripts/install-orthanc-root.sh {orthanc_root}"
        raise ClusterError("missing: " + "; ".join(missing) + f".\n{hint}")
    assert orthanc and nginx and pg_plugin and python_plugin
    return Binaries(orthanc, nginx, Path(postgres_dirs[0]).parent, pg_plugin, python_plugin, prefix, env)


def _first(patterns: list[str]) -> str | None:
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[0]
    return None
