"""The real-VM backends' guest image: Debian 12 built from Debian's packages only, cached.

``ensure_image()`` returns a directory under the user's cache
(``$XDG_CACHE_HOME/tcplab/images/<recipe-hash>/``, default ``~/.cache/...``) holding

    rootfs.raw   an ext4 filesystem image (no partition table: ``root=/dev/vda``)
    vmlinuz      the Debian kernel (linux-image-amd64), booted directly by qemu/libvirt
    initrd.img   its initramfs
    recipe.json  what the image was built from (the hash of this is the directory's name)

It is rebuilt only when the recipe (suite, packages, files written into the image, the chroot
script, ``BUILD_VERSION``) changes.  The build is ``debootstrap --variant=minbase`` into a
directory, a few files written into it, then ``mkfs.ext4 -d`` (this kind of machine has no
partitioned loop devices, and no loop device is needed at all this way).  Nothing per-lab is in
the image: a lab injects its SSH keys and network at boot through qemu's fw_cfg
(``opt/tcplab/<name>``), read by ``tcplab-fwcfg.service`` before sshd and systemd-networkd
start.  Without fw_cfg (a Vagrant box made from the image) the guest takes DHCP on every
``eth*`` and makes its own host keys.

Two variants share the recipe (:data:`VARIANTS`): ``lab`` (the default: the lab VM of the qemu
and vagrant-libvirt backends), which adds Debian's ``pypy3`` (the responder's second runtime,
``--runtime pypy``: the guest has no package mirror to install it from), and ``labhost``, a
machine that *holds* labs for ``--hosts`` (:mod:`harness.lab.remote`): the common packages plus
what this machine's netns backend needs (dumpcap/tshark, tcpdump, nc; Scapy for the Scapy
lessons), baked in because a guest has no package mirror.  ``ensure_image("labhost")`` builds it into its own cache directory; the default
image's recipe, and so its hash and cache directory, do not change with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from harness.util import LabError, progress, require_root, require_tools, run, stream

BUILD_VERSION = 1             # bump when the build steps in _build() change what they make
SUITE = "bookworm"
#: Both variants' packages.
PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev", "dbus", "kmod", "openssh-server",
            "python3", "iptables", "iproute2", "sudo", "procps", "ethtool")
#: The lab VM's extra packages: the interpreter of each responder runtime beyond python3
#: (responder.contract.RUNTIMES; tests/unit/test_image.py checks that every runtime has its
#: package).  The provisioning never installs packages in a qemu guest (no route to a mirror).
LAB_PACKAGES = ("pypy3",)
#: The lab host's extra packages: what ``harness.lab.netns`` needs on the machine that runs the
#: labs (packages/apt.txt's lab part) and python3-scapy for the Scapy client.
LABHOST_PACKAGES = ("tshark", "tcpdump", "netcat-openbsd", "openssh-client", "python3-scapy")
DEFAULT_VARIANT = "lab"
IMAGE_EXTRA_MB = 768          # free space in the root filesystem beyond what the build uses
FWCFG_ROOT = "/sys/firmware/qemu_fw_cfg/by_name/opt/tcplab"

# Files written into the root filesystem (path -> (mode, content)).  Part of the recipe.
GUEST_FILES: dict[str, tuple[int, str]] = {
    "/etc/hostname": (0o644, "tcplab-vm\n"),
    "/etc/hosts": (0o644, "127.0.0.1 localhost\n127.0.1.1 tcplab-vm\n"),
    "/etc/fstab": (0o644, "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"),
    # Default network: DHCP on every NIC (a Vagrant box's management network); sorts after
    # Vagrant's own 50-vagrant-ethN.network for its private_network.  A tcplab qemu
    # lab overrides it with a static address from fw_cfg (/run/systemd/network sorts first).
    "/etc/systemd/network/80-tcplab-dhcp.network": (0o644, """\
[Match]
Name=eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
"""),
    "/etc/ssh/sshd_config.d/tcplab.conf": (0o644, """\
# tcplab lab VM: keys only; the host key comes from fw_cfg (a qemu lab) or ssh-keygen -A.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
"""),
    "/etc/sudoers.d/vagrant": (0o440, "vagrant ALL=(ALL) NOPASSWD: ALL\n"),
    # Boot time under TCG is mostly the kernel and udev: a small initramfs (only what finds
    # /dev/vda), and no autoloading of drivers the lab never uses.
    "/etc/initramfs-tools/conf.d/tcplab.conf": (0o644, "MODULES=list\nCOMPRESS=gzip\n"),
    "/etc/initramfs-tools/modules": (0o644, "virtio_pci\nvirtio_blk\nvirtio_scsi\next4\n"),
    "/etc/modprobe.d/tcplab-blacklist.conf": (0o644, "".join(
        f"blacklist {m}\n" for m in ("cfg80211", "kvm", "kvm_amd", "kvm_intel", "iTCO_wdt",
                                       "pcspkr", "drm", "ccp", "floppy", "snd_pcsp", "joydev",
                                       "psmouse", "serio_raw", "intel_pmc_bxt"))),
    "/usr/local/sbin/tcplab-fwcfg": (0o755, f"""\
#!/bin/sh
# Per-lab settings from qemu's fw_cfg (qemu -fw_cfg name=opt/tcplab/NAME,file=...): the SSH
# host key, root's authorized_keys and the network.  Runs before sshd and systemd-networkd.
set -eu
modprobe qemu_fw_cfg 2>/dev/null || true
d={FWCFG_ROOT}
get() {{ [ -r "$d/$1/raw" ] && cat "$d/$1/raw"; }}
if [ -d "$d" ]; then
    umask 077
    if get ssh_host_ed25519_key > /etc/ssh/ssh_host_ed25519_key.new; then
        mv /etc/ssh/ssh_host_ed25519_key.new /etc/ssh/ssh_host_ed25519_key
        get ssh_host_ed25519_key.pub > /etc/ssh/ssh_host_ed25519_key.pub
    else
        rm -f /etc/ssh/ssh_host_ed25519_key.new
    fi
    if get authorized_keys > /dev/null; then
        mkdir -p /root/.ssh
        get authorized_keys > /root/.ssh/authorized_keys
    fi
    if get network > /dev/null; then
        mkdir -p /run/systemd/network
        umask 022
        get network > /run/systemd/network/10-tcplab.network
    fi
fi
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
exit 0
"""),
    "/etc/systemd/system/tcplab-fwcfg.service": (0o644, """\
[Unit]
Description=tcplab per-lab settings from qemu fw_cfg (SSH keys, network)
DefaultDependencies=no
After=local-fs.target systemd-udevd.service
Before=systemd-networkd.service ssh.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/tcplab-fwcfg

[Install]
WantedBy=sysinit.target
"""),
}

# Run inside the root filesystem (chroot) after debootstrap.  Part of the recipe.
CHROOT_SCRIPT = """\
set -eu
systemctl enable systemd-networkd.service tcplab-fwcfg.service
systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-logind.service 2>/dev/null || true
update-initramfs -u -k all
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
passwd -l root >/dev/null
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""


#: variant -> (extra packages, files that replace or add to GUEST_FILES, shell lines run in the
#: chroot after CHROOT_SCRIPT).  "lab" adds only packages.  The lab host gets no pypy3: it stands
#: for any lab host the tcplab_labhost role accepts, which need not have it (a remote lab run
#: with --runtime pypy needs pypy3 installed on its lab host; the playbook says so).  The lab
#: host's root gets password "*" (no password matches it) instead of the locked "!": a netns
#: lab's sshd runs without PAM, and OpenSSH without PAM refuses a locked account even with a key.
VARIANTS: dict[str, tuple[tuple, dict, str]] = {
    "lab": (LAB_PACKAGES, {}, ""),
    "labhost": (LABHOST_PACKAGES, {
        "/etc/hostname": (0o644, "tcplab-labhost\n"),
        "/etc/hosts": (0o644, "127.0.0.1 localhost\n127.0.1.1 tcplab-labhost\n"),
    }, "usermod -p '*' root\n"),
}


def _variant(variant: str) -> tuple[tuple, dict, str]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise LabError(f"unknown image variant {variant!r}: choose one of "
                       f"{', '.join(VARIANTS)}") from None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tcplab" / "images"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else the CDN."""
    env = os.environ.get("TCPLAB_DEBIAN_MIRROR")
    if env:
        return env
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files += [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            if re.search(rf"^Suites:.*\b{SUITE}\b", stanza, re.M) and \
                    re.search(r"^Components:.*\bmain\b", stanza, re.M):
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if m and not m.group(1).rstrip("/").endswith("-security"):
                    return m.group(1)
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s.*\bmain\b", text, re.M)
        if m and not m.group(1).rstrip("/").endswith("-security"):
            return m.group(1)
    return "http://deb.debian.org/debian"


def guest_files(variant: str = DEFAULT_VARIANT) -> dict[str, tuple[int, str]]:
    """The files written into ``variant``'s root filesystem."""
    return {**GUEST_FILES, **_variant(variant)[1]}


def guest_packages(variant: str = DEFAULT_VARIANT) -> tuple:
    return tuple(PACKAGES) + _variant(variant)[0]


def chroot_script(variant: str = DEFAULT_VARIANT) -> str:
    return CHROOT_SCRIPT + _variant(variant)[2]


def recipe(variant: str = DEFAULT_VARIANT) -> dict:
    """Everything the image depends on; its hash names the cache directory.  The mirror is not
    part of it (any mirror gives the same suite).  The default variant's recipe has no
    variant key (its name is not part of its hash; its packages are)."""
    r = {"version": BUILD_VERSION, "suite": SUITE, "variant": "minbase",
         "packages": list(guest_packages(variant)), "extra_mb": IMAGE_EXTRA_MB,
         "files": {p: [oct(m), c] for p, (m, c) in sorted(guest_files(variant).items())},
         "chroot": chroot_script(variant)}
    if variant != DEFAULT_VARIANT:
        r["image_variant"] = variant
    return r


def recipe_hash(r: dict | None = None) -> str:
    r = recipe() if r is None else r
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]


def image_dir(variant: str = DEFAULT_VARIANT) -> Path:
    return cache_root() / recipe_hash(recipe(variant))


def image_ready(d: Path) -> bool:
    return all((d / f).is_file() for f in ("rootfs.raw", "vmlinuz", "initrd.img", "recipe.json"))


def ensure_image(variant: str = DEFAULT_VARIANT) -> Path:
    """The cached image of ``variant`` for the current recipe, built first when missing
    (~2 min; the lab host's ~3 min)."""
    d = image_dir(variant)
    if image_ready(d):
        progress(f"guest image{'' if variant == DEFAULT_VARIANT else ' ' + variant}: "
                 f"cached in {d}")
        return d
    require_root("building the guest image (debootstrap, mkfs.ext4 -d with file ownership)")
    require_tools("debootstrap", "mkfs.ext4", "chroot")
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f"{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # a second `up` waits for the first build
        if image_ready(d):
            return d
        _build(d, variant)
    return d


class _DebootstrapProgress:
    """Turns debootstrap's one-line-per-package output into a few progress lines: phase lines
    as they come, per-package lines (retrieving, unpacking, configuring ...) at most every 10 s."""

    PER_PACKAGE = ("Retrieving", "Validating", "Extracting", "Unpacking", "Configuring")

    def __init__(self):
        self.count = 0
        self.last = 0.0

    def __call__(self, line: str) -> None:
        if not line.startswith("I: "):
            return
        words = line[3:].split()
        if words and words[0] in self.PER_PACKAGE and len(words) == 3:   # "Verb pkg version"
            self.count += 1
            if time.monotonic() - self.last < 10:
                return
            line = f"I: {line[3:]} ({self.count} package steps so far)"
        self.last = time.monotonic()
        progress(f"  debootstrap: {line[3:]}")


def _build(d: Path, variant: str = DEFAULT_VARIANT) -> None:
    t0 = time.monotonic()
    mirror = debian_mirror()
    work = d.with_name(d.name + ".build")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "rootfs"
    logpath = work / "build.log"
    progress(f"guest image: building Debian 12 from {mirror} into {d} (~2-3 min, once per "
             f"recipe; log: {d}/build.log)")
    try:
        with open(logpath, "w") as log:
            stream(["debootstrap", "--variant=minbase", "--components=main",
                    "--include=" + ",".join(guest_packages(variant)), SUITE, str(root), mirror],
                   log=log, what="debootstrap", show=_DebootstrapProgress(), timeout=1200)
            progress("  configuring the guest (sshd, networkd, fw_cfg unit)")
            for path, (mode, content) in guest_files(variant).items():
                p = root / path.lstrip("/")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(content)
                os.chmod(p, mode)
            stream(["chroot", str(root), "/bin/sh", "-c", chroot_script(variant)], log=log,
                   what="configuring the guest in chroot", timeout=300)
            kernels = sorted((root / "boot").glob("vmlinuz-*"))
            initrds = sorted((root / "boot").glob("initrd.img-*"))
            if not kernels or not initrds:
                raise LabError(f"no kernel/initrd in the built rootfs (log: {logpath})")
            shutil.copy2(kernels[-1], work / "vmlinuz")
            shutil.copy2(initrds[-1], work / "initrd.img")
            used_mb = int(run(["du", "-sm", "-x", str(root)], what="du").stdout.split()[0])
            size_mb = used_mb + IMAGE_EXTRA_MB
            progress(f"  mkfs.ext4 -d: {used_mb} MB of files into a {size_mb} MB image")
            stream(["mkfs.ext4", "-q", "-F", "-L", "tcplab-root", "-d", str(root),
                    str(work / "rootfs.raw"), f"{size_mb}M"], log=log, what="mkfs.ext4 -d",
                   timeout=600)
            shutil.rmtree(root)
        meta = dict(recipe(variant), mirror=mirror, kernel=kernels[-1].name,
                    built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    build_seconds=round(time.monotonic() - t0, 1))
        (work / "recipe.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(d, ignore_errors=True)
        work.rename(d)
    except BaseException:
        # Leave nothing half-built that could be taken for an image; keep the log for the user.
        shutil.rmtree(root, ignore_errors=True)
        for f in ("rootfs.raw", "vmlinuz", "initrd.img"):
            (work / f).unlink(missing_ok=True)
        raise
    progress(f"guest image: built in {time.monotonic() - t0:.0f} s")
