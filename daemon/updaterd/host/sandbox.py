"""What the installed updaterd.service may write, for `updaterd check-config`: the packaged unit
runs with `ProtectSystem=strict` and `ReadWritePaths=/opt`, so a `prefix` or an in-place
`target` elsewhere (`/usr/local/bin/tool`) passes a check from a shell and fails at the first
update ("Read-only file system"). check-config runs outside the sandbox, so it asks systemd
for the unit's settings and judges each folder the configuration installs into.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from updaterd.host.config import Config

UNIT = "updaterd.service"
PROPERTIES = ("LoadState", "UnitFileState", "ActiveState", "ProtectSystem", "ReadWritePaths")
# what each ProtectSystem= value makes read-only (systemd.exec(5))
READ_ONLY = {"strict": ("/",), "full": ("/usr", "/boot", "/efi", "/etc"),
             "yes": ("/usr", "/boot", "/efi"), "true": ("/usr", "/boot", "/efi")}


def written_folders(cfg: Config) -> dict[str, Path]:
    """Each folder an update writes into, by what it is for."""
    out = {}
    for name, app in cfg.apps.items():
        if app.install == "inplace" and app.target:
            out[f"apps.{name}.target's folder"] = Path(app.target).parent
        elif app.prefix:
            out[f"apps.{name}.prefix"] = Path(app.prefix)
    return out


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show -p A -p B` output: `A=value` lines."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _under(path: Path, root: str) -> bool:
    return path == Path(root) or Path(root) in path.parents


def problems(folders: dict[str, Path], show: dict[str, str]) -> list[str]:
    """The folders the unit, as systemd has it, cannot write; none when the unit is not
    installed, or neither enabled nor running (updaterd runs some other way)."""
    if show.get("LoadState") != "loaded" or (show.get("UnitFileState") not in
                                             ("enabled", "enabled-runtime", "static")
                                             and show.get("ActiveState") != "active"):
        return []
    read_only = READ_ONLY.get(show.get("ProtectSystem", "no"), ())
    writable = [p.lstrip("-+") for p in show.get("ReadWritePaths", "").split() if p]
    out = []
    for what, folder in folders.items():
        folder = folder.absolute()
        if any(_under(folder, r) for r in read_only) and \
                not any(_under(folder, w) for w in writable):
            listed = " ".join(writable) or "nothing"
            out.append(f"{what} {folder}: {UNIT} cannot write it (ProtectSystem="
                       f"{show['ProtectSystem']}; ReadWritePaths= lists {listed}): add it "
                       f"with `systemctl edit updaterd` ([Service] ReadWritePaths={folder})")
    return out


def unit_problems(cfg: Config) -> list[str]:
    """`problems` for the unit installed on this host (none where systemd does not run)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return []
    try:
        r = subprocess.run([systemctl, "show", UNIT, *(f"-p{p}" for p in PROPERTIES)],
                           capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return problems(written_folders(cfg), parse_show(r.stdout))
