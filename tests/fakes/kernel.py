"""A fake kernel for fake sysfs trees: the write semantics plain files cannot have.

Plugged into :class:`governors.sysfs.Sysfs` as its ``hook``. It emulates, from the kernel sources:
- cpufreq: ``scaling_governor`` must be one of ``scaling_available_governors``; ``scaling_setspeed``
  is writable only under ``userspace`` (else EINVAL) and reads ``<unsupported>`` otherwise;
  ``scaling_min_freq`` <= ``scaling_max_freq`` is enforced (EINVAL), as on the 3.10/4.9 kernels of
  the boards; limits are clamped to ``cpuinfo_min/max_freq``; ``scaling_cur_freq`` follows the governor.
- devfreq: ``governor`` must be available; the ``userspace/`` group exists only under the userspace
  governor; ``min_freq`` <= ``max_freq``; ``cur_freq`` follows the governor and the limits.
- permissions: attributes without a write bit refuse writes even for root (kernfs), an
  "unprivileged" mode refuses every write and reads of 0400 files, a read-only tree gives EROFS.
- hardkernel INA231: ``sensor_W``/``A``/``V`` read zero until ``enable`` is 1.
- fault injection: ``fail_writes[target_path] = errno`` / ``fail_reads[...]``.
Every accepted write is logged in ``writes`` (target path, value) so tests can check the order.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@dataclass
class FakeKernel:
    root: str
    unprivileged: bool = False
    read_only_fs: bool = False
    fail_writes: dict[str, int] = field(default_factory=dict)
    fail_reads: dict[str, int] = field(default_factory=dict)
    writes: list[tuple[str, str]] = field(default_factory=list)
    # Frequency each cpufreq policy / devfreq device runs at under its own governor (by host realpath).
    natural: dict[str, int] = field(default_factory=dict)
    user_target: dict[str, int] = field(default_factory=dict)
    sensor_values: dict[str, dict[str, str]] = field(default_factory=dict)
    # cpufreq policies whose CPUs are all offline: every attribute answers EBUSY (cpufreq.c show/store)
    inactive: set[str] = field(default_factory=set)

    # -- helpers -----------------------------------------------------------------------------
    def host(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _read(self, host_path: str) -> str:
        with open(host_path) as fh:
            return fh.read().strip()

    def _put(self, host_path: str, text: str) -> None:
        with open(host_path, "w") as fh:  # truncate in place: open descriptors see the new text
            fh.write(text + "\n")

    def _int(self, host_path: str) -> int | None:
        try:
            return int(self._read(host_path).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -- SysfsHook -----------------------------------------------------------------------------
    def access(self, path: str, write: bool) -> bool:
        host = self.host(path)
        try:
            mode = os.stat(host).st_mode
        except OSError:
            return False
        if write:
            return not (self.read_only_fs or self.unprivileged) and bool(mode & 0o222)
        if self.unprivileged:
            return bool(mode & stat.S_IROTH)
        return bool(mode & 0o444)

    def _inactive(self, path: str) -> bool:
        return bool(self.inactive) and os.path.dirname(os.path.realpath(self.host(path))) in self.inactive

    def before_read(self, path: str) -> None:
        if path in self.fail_reads:
            raise _err(self.fail_reads[path], path)
        if self._inactive(path):
            raise _err(errno.EBUSY, path)
        if self.unprivileged and os.path.exists(self.host(path)) and not self.access(path, write=False):
            raise _err(errno.EACCES, path)

    def before_write(self, path: str, value: str) -> None:
        host = self.host(path)
        if path in self.fail_writes:
            raise _err(self.fail_writes[path], path)
        if not os.path.exists(host):
            raise _err(errno.ENOENT, path)
        if self._inactive(path):
            raise _err(errno.EBUSY, path)
        if self.read_only_fs:
            raise _err(errno.EROFS, path)
        if not self.access(path, write=True):
            raise _err(errno.EACCES, path)
        real = os.path.realpath(host)
        d, name = os.path.split(real)
        if name == "scaling_governor":
            self._need_choice(value, f"{d}/scaling_available_governors", path)
        elif name == "scaling_setspeed":
            if self._read(f"{d}/scaling_governor") != "userspace":
                raise _err(errno.EINVAL, path)
            self._need_int(value, path)
        elif name in ("scaling_min_freq", "scaling_max_freq"):
            v = self._need_int(value, path)
            self._check_limits(d, "scaling_min_freq", "scaling_max_freq", name == "scaling_min_freq", v, path)
        elif name == "governor" and os.path.exists(f"{d}/available_governors"):
            self._need_choice(value, f"{d}/available_governors", path)
        elif name in ("min_freq", "max_freq") and os.path.exists(f"{d}/available_frequencies"):
            v = self._need_int(value, path)
            self._check_limits(d, "min_freq", "max_freq", name == "min_freq", v, path)
        elif name == "set_freq":
            self._need_int(value, path)
        elif name == "enable" and value not in ("0", "1"):
            raise _err(errno.EINVAL, path)

    def after_write(self, path: str, value: str) -> None:
        self.writes.append((path, value))
        real = os.path.realpath(self.host(path))
        d, name = os.path.split(real)
        if name in ("scaling_governor", "scaling_setspeed", "scaling_min_freq", "scaling_max_freq"):
            if name == "scaling_setspeed":
                self.user_target[d] = int(value)
            self._settle_cpufreq(d, governor_changed=name == "scaling_governor")
        elif name in ("governor", "min_freq", "max_freq") and os.path.exists(f"{d}/available_frequencies"):
            self._settle_devfreq(d, governor_changed=name == "governor")
        elif name == "set_freq" and os.path.basename(d) == "userspace":
            devfreq = os.path.dirname(d)
            self.user_target[devfreq] = int(value)
            self._settle_devfreq(devfreq, governor_changed=False)
        elif name == "enable" and d in self.sensor_values:
            for fname, text in self.sensor_values[d].items():
                self._put(f"{d}/{fname}", text if value == "1" else _zero_like(text))

    # -- semantics -----------------------------------------------------------------------------
    def _need_int(self, value: str, path: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise _err(errno.EINVAL, path) from None

    def _need_choice(self, value: str, choices_path: str, path: str) -> None:
        if value not in self._read(choices_path).split():
            raise _err(errno.EINVAL, path)

    def _check_limits(self, d: str, min_name: str, max_name: str, is_min: bool, v: int, path: str) -> None:
        other = self._int(f"{d}/{max_name if is_min else min_name}")
        if other is not None and ((is_min and v > other) or (not is_min and v < other)):
            raise _err(errno.EINVAL, path)

    def _settle_cpufreq(self, d: str, governor_changed: bool) -> None:
        lo, hi = self._int(f"{d}/cpuinfo_min_freq"), self._int(f"{d}/cpuinfo_max_freq")
        for fname in ("scaling_min_freq", "scaling_max_freq"):  # drivers clamp limits to the hardware range
            v = self._int(f"{d}/{fname}")
            if v is not None and lo is not None and hi is not None and not lo <= v <= hi:
                self._put(f"{d}/{fname}", str(min(max(v, lo), hi)))
        mn, mx = self._int(f"{d}/scaling_min_freq") or 0, self._int(f"{d}/scaling_max_freq") or 0
        governor = self._read(f"{d}/scaling_governor")
        cur = self._int(f"{d}/scaling_cur_freq") or mn
        if governor == "userspace":
            if governor_changed:
                self.user_target[d] = cur  # the userspace governor starts at the current frequency
            freq = min(max(self.user_target.get(d, cur), mn), mx)
            if os.path.exists(f"{d}/scaling_setspeed"):
                self._put(f"{d}/scaling_setspeed", str(freq))  # shows policy->cur
        else:
            freq = self._governed(d, governor, mn, mx)
            if os.path.exists(f"{d}/scaling_setspeed"):
                self._put(f"{d}/scaling_setspeed", "<unsupported>")
        self._put(f"{d}/scaling_cur_freq", str(freq))
        if os.path.exists(f"{d}/cpuinfo_cur_freq"):
            self._put(f"{d}/cpuinfo_cur_freq", str(freq))

    def _settle_devfreq(self, d: str, governor_changed: bool) -> None:
        mn, mx = self._int(f"{d}/min_freq") or 0, self._int(f"{d}/max_freq") or 0
        governor = self._read(f"{d}/governor")
        cur = self._int(f"{d}/cur_freq") or mn
        user_dir = f"{d}/userspace"
        if governor == "userspace":
            if governor_changed or not os.path.isdir(user_dir):
                self.user_target[d] = cur
                os.makedirs(user_dir, exist_ok=True)
                self._put(f"{user_dir}/set_freq", str(cur))
            else:
                self._put(f"{user_dir}/set_freq", str(self.user_target.get(d, cur)))
            freq = min(max(self.user_target.get(d, cur), mn), mx)
        else:
            if os.path.isdir(user_dir):  # the sysfs group goes away with the governor
                os.unlink(f"{user_dir}/set_freq")
                os.rmdir(user_dir)
            freq = self._governed(d, governor, mn, mx)
        self._put(f"{d}/cur_freq", str(freq))
        if os.path.exists(f"{d}/target_freq"):
            self._put(f"{d}/target_freq", str(freq))

    def _governed(self, d: str, governor: str, mn: int, mx: int) -> int:
        if governor == "performance":
            return mx
        if governor == "powersave" and not self._intel_pstate(d):
            return mn  # intel_pstate's "powersave" is a dynamic (HWP) governor, not a pin at min
        return min(max(self.natural.get(d, mn), mn), mx)

    def _intel_pstate(self, d: str) -> bool:
        try:
            return self._read(f"{d}/scaling_driver") == "intel_pstate"
        except OSError:
            return False


def _zero_like(text: str) -> str:
    return "0.000000" if "." in text else "0"
