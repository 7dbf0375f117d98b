"""One DVFS node abstraction: cpufreq and devfreq nodes set, remember, restore and read back alike."""

from __future__ import annotations

import pytest

from governors.dvfs import FILES, DvfsNode


class DictSysfs:
    """Files as a dict; writes that would leave min > max are refused like the kernel does."""

    def __init__(self, files: dict[str, str], kind: str) -> None:
        self.files = files
        self.f = FILES[kind]
        self.writes: list[str] = []

    def try_read(self, path: str) -> str | None:
        return self.files.get(path)

    def try_int(self, path: str) -> int | None:
        v = self.files.get(path)
        return None if v is None else int(v)

    def write(self, path: str, value: str | int) -> None:
        new = {**self.files, path: str(value)}
        lo, hi = (int(new[f"/n/{x}"]) for x in (self.f.min, self.f.max))
        if lo > hi:
            raise OSError(22, "Invalid argument", path)
        self.files = new
        self.writes.append(path.rsplit("/n/", 1)[1])


@pytest.mark.parametrize("kind", ["cpufreq", "devfreq"])
@pytest.mark.parametrize("userspace", [False, True])
def test_pin_then_restore_leaves_the_node_as_found(kind: str, userspace: bool) -> None:
    f = FILES[kind]
    original = {f"/n/{f.governor}": "schedutil", f"/n/{f.min}": "300", f"/n/{f.max}": "900", f"/n/{f.cur}": "900",
                f"/n/{f.speed}": "0"}
    sysfs = DictSysfs(dict(original), kind)
    node = DvfsNode(kind, "/n")
    saved = node.remember(sysfs)
    assert (saved.kind, saved.governor, saved.min, saved.max) == (kind, "schedutil", 300, 900)
    node.pin(sysfs, 1200 if not userspace else 600, userspace)  # going up: max before min
    if userspace:
        assert sysfs.files[f"/n/{f.governor}"] == "userspace" and sysfs.files[f"/n/{f.speed}"] == "600"
    else:
        assert sysfs.writes == [f.max, f.min] and node.read_limits(sysfs) == (1200, 1200)
    node.pin(sysfs, 200, False)  # going down: min before max
    assert node.read_limits(sysfs) == (200, 200)
    node.restore(sysfs, saved)
    # the set speed only means something under userspace, which the node was not in: not restored
    assert {k: v for k, v in sysfs.files.items() if not k.endswith(f.speed)} == \
        {k: v for k, v in original.items() if not k.endswith(f.speed)}
    assert node.read_cur(sysfs) == 900


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DVFS node kind"):
        DvfsNode("pstate", "/x")
