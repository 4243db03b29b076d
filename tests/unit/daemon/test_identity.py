"""Host fingerprint (R-ID-7..13): first run, match, MAC rotation, clones, corrupt records.

Every test runs on a fake host tree under tmp_path (``etc/machine-id``,
``sys/class/net/<if>/address``) through ``HostRoots``; macOS goes through an injected
``run``.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from claudemesh.daemon.identity import (
    FILE_NAME,
    HostCheck,
    HostRoots,
    accept_host,
    check_host,
    compute_fingerprint,
    current_identity,
    mismatch_message,
    pick_stable_mac,
)

MACHINE_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
ETH_MAC = "00:1a:2b:3c:4d:5e"
DOCK_MAC = "00:1a:2b:99:88:77"
FIXED_NOW = datetime(2026, 5, 3, 12, 0, 0, tzinfo=UTC)


class FakeHost:
    """A host tree under tmp_path, plus the daemon directory next to it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.daemon_dir = tmp_path / "daemon"
        self.daemon_dir.mkdir(mode=0o700)

    @property
    def roots(self) -> HostRoots:
        return HostRoots(root=self.root, platform="linux")

    @property
    def record_path(self) -> Path:
        return self.daemon_dir / FILE_NAME

    def machine_id(self, value: str | None, where: str = "etc/machine-id") -> None:
        path = self.root / where
        if value is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)

    def interface(self, name: str, address: str | None) -> None:
        folder = self.root / "sys" / "class" / "net" / name
        if address is None:
            (folder / "address").unlink(missing_ok=True)
            folder.rmdir()
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "address").write_text(address + "\n")

    def record(self) -> dict[str, object]:
        data = json.loads(self.record_path.read_text())
        assert isinstance(data, dict)
        return data

    def check(self) -> HostCheck:
        return check_host(self.daemon_dir, self.roots, now=lambda: FIXED_NOW).outcome


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path)
    fake.machine_id(MACHINE_ID + "\n")
    fake.interface("lo", "00:00:00:00:00:00")
    fake.interface("eth0", ETH_MAC)
    return fake


# --- the file flow -------------------------------------------------------------------


def test_the_first_run_writes_a_private_record_with_every_field(host: FakeHost) -> None:
    result = check_host(host.daemon_dir, host.roots, now=lambda: FIXED_NOW)

    assert result.outcome is HostCheck.FIRST_RUN
    assert stat.S_IMODE(host.record_path.stat().st_mode) == 0o600
    record = host.record()
    assert record == {
        "schema_version": 1,
        "fingerprint": compute_fingerprint(f"linux:{MACHINE_ID}", ETH_MAC),
        "host_id": f"linux:{MACHINE_ID}",
        "stable_mac": ETH_MAC,
        "written_at": "2026-05-03T12:00:00Z",
    }
    assert result.fingerprint == record["fingerprint"]
    assert (result.current_host_id, result.current_mac) == (f"linux:{MACHINE_ID}", ETH_MAC)
    assert (result.stored_host_id, result.stored_mac) == ("", "")


def test_the_fingerprint_is_sha256_of_v1_host_id_and_mac_separated_by_nuls() -> None:
    expected = hashlib.sha256(b"v1\x00linux:abc\x00" + ETH_MAC.encode()).hexdigest()
    assert compute_fingerprint("linux:abc", ETH_MAC) == expected
    assert compute_fingerprint("linux:ab", "c" + ETH_MAC) != expected


def test_a_second_run_on_the_same_host_matches_and_leaves_the_file_alone(
        host: FakeHost) -> None:
    host.check()
    before = host.record_path.read_bytes()

    result = check_host(host.daemon_dir, host.roots, now=lambda: datetime(2030, 1, 1, tzinfo=UTC))

    assert result.outcome is HostCheck.MATCH
    assert host.record_path.read_bytes() == before
    assert (result.stored_host_id, result.stored_mac) == (f"linux:{MACHINE_ID}", ETH_MAC)


def test_a_changed_mac_with_the_same_host_id_matches_and_rewrites_the_mac(
        host: FakeHost) -> None:
    host.check()
    host.interface("eth0", DOCK_MAC)

    result = check_host(host.daemon_dir, host.roots, now=lambda: FIXED_NOW)

    assert result.outcome is HostCheck.MATCH_MAC_CHANGED
    assert (result.stored_mac, result.current_mac) == (ETH_MAC, DOCK_MAC)
    record = host.record()
    assert record["stable_mac"] == DOCK_MAC
    assert record["fingerprint"] == compute_fingerprint(f"linux:{MACHINE_ID}", DOCK_MAC)
    assert stat.S_IMODE(host.record_path.stat().st_mode) == 0o600
    assert host.check() is HostCheck.MATCH


def test_a_changed_host_id_is_a_mismatch_and_the_file_is_untouched(host: FakeHost) -> None:
    host.check()
    before = host.record_path.read_bytes()
    host.machine_id(OTHER_ID)

    result = check_host(host.daemon_dir, host.roots)

    assert result.outcome is HostCheck.MISMATCH
    assert host.record_path.read_bytes() == before
    assert (result.stored_host_id, result.current_host_id) == (
        f"linux:{MACHINE_ID}", f"linux:{OTHER_ID}")
    assert result.message == mismatch_message(result)


def test_a_changed_host_id_is_a_mismatch_even_when_the_mac_is_the_same(
        host: FakeHost) -> None:
    host.check()
    host.machine_id(OTHER_ID)  # e.g. a VM clone that regenerated its machine-id only

    assert host.check() is HostCheck.MISMATCH


def test_the_mismatch_message_names_both_ids_and_the_way_out(host: FakeHost) -> None:
    host.check()
    host.machine_id(OTHER_ID)

    message = mismatch_message(check_host(host.daemon_dir, host.roots))

    assert f"linux:{MACHINE_ID}" in message
    assert f"linux:{OTHER_ID}" in message
    assert "claudemesh daemon accept-host" in message
    assert "clone" in message
    assert "new key" in message


@pytest.mark.parametrize("content", [
    "not json at all {",
    "[1, 2, 3]",
    '"just a string"',
    json.dumps({"schema_version": 1, "host_id": "linux:x"}),
    json.dumps({"schema_version": 2, "fingerprint": "0" * 64, "host_id": "linux:x",
                "stable_mac": "", "written_at": "2026-05-03T12:00:00Z"}),
    json.dumps({"schema_version": "1", "fingerprint": compute_fingerprint("linux:x", ""),
                "host_id": "linux:x", "stable_mac": "", "written_at": "x"}),
    json.dumps({"schema_version": True, "fingerprint": compute_fingerprint("linux:x", ""),
                "host_id": "linux:x", "stable_mac": "", "written_at": "x"}),
    json.dumps({"schema_version": 1, "fingerprint": "0" * 64, "host_id": "linux:x",
                "stable_mac": "", "written_at": "2026-05-03T12:00:00Z"}),
    json.dumps({"schema_version": 1, "fingerprint": compute_fingerprint("", ""),
                "host_id": "", "stable_mac": "", "written_at": "2026-05-03T12:00:00Z"}),
    json.dumps({"schema_version": 1, "fingerprint": compute_fingerprint("linux:x", ""),
                "host_id": 7, "stable_mac": "", "written_at": "2026-05-03T12:00:00Z"}),
    "\udcff",
], ids=["not-json", "json-array", "json-string", "missing-fields", "schema-2",
        "schema-as-string", "schema-as-bool", "fingerprint-disagrees", "all-empty",
        "host-id-not-a-string", "not-utf8"])
def test_a_corrupt_record_is_unreadable_without_raising_and_is_left_alone(
        host: FakeHost, content: str) -> None:
    host.record_path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    before = host.record_path.read_bytes()

    result = check_host(host.daemon_dir, host.roots)

    assert result.outcome is HostCheck.UNREADABLE
    assert host.record_path.read_bytes() == before
    assert str(host.record_path) in result.message
    assert "accept-host" in result.message
    assert result.fingerprint == ""


def test_a_record_that_is_a_directory_is_unreadable_not_a_crash(host: FakeHost) -> None:
    host.record_path.mkdir()

    assert host.check() is HostCheck.UNREADABLE
    assert host.record_path.is_dir()


def test_accept_host_after_a_mismatch_makes_the_next_check_match(host: FakeHost) -> None:
    host.check()
    host.machine_id(OTHER_ID)
    assert host.check() is HostCheck.MISMATCH

    accepted = accept_host(host.daemon_dir, host.roots, now=lambda: FIXED_NOW)

    assert accepted.outcome is HostCheck.ACCEPTED
    assert accepted.stored_host_id == f"linux:{MACHINE_ID}"
    assert host.record()["host_id"] == f"linux:{OTHER_ID}"
    assert stat.S_IMODE(host.record_path.stat().st_mode) == 0o600
    assert host.check() is HostCheck.MATCH


def test_accept_host_replaces_a_corrupt_record(host: FakeHost) -> None:
    host.record_path.write_text("{broken")
    assert host.check() is HostCheck.UNREADABLE

    accepted = accept_host(host.daemon_dir, host.roots)

    assert accepted.outcome is HostCheck.ACCEPTED
    assert accepted.stored_host_id == ""
    assert host.check() is HostCheck.MATCH


# --- fallbacks (R-ID-11) ---------------------------------------------------------------


def test_without_a_host_id_the_record_is_mac_only_and_a_mac_change_is_a_mismatch(
        host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    host.machine_id(None)
    caplog.set_level("WARNING")

    result = check_host(host.daemon_dir, host.roots)

    assert result.outcome is HostCheck.FIRST_RUN
    assert "fingerprint_host_id_unavailable" in caplog.messages
    assert host.record()["host_id"] == ""
    assert host.record()["fingerprint"] == compute_fingerprint("", ETH_MAC)
    assert host.check() is HostCheck.MATCH

    host.interface("eth0", DOCK_MAC)
    assert host.check() is HostCheck.MISMATCH
    assert host.record()["stable_mac"] == ETH_MAC


def test_a_mac_only_record_gains_the_host_id_once_one_appears(host: FakeHost) -> None:
    host.machine_id(None)
    host.check()
    host.machine_id(MACHINE_ID)

    assert host.check() is HostCheck.MATCH
    assert host.record()["host_id"] == f"linux:{MACHINE_ID}"
    host.interface("eth0", DOCK_MAC)
    assert host.check() is HostCheck.MATCH_MAC_CHANGED


def test_a_host_id_that_disappears_falls_back_to_the_mac(host: FakeHost) -> None:
    host.check()
    host.machine_id(None)
    assert host.check() is HostCheck.MATCH
    assert host.record()["host_id"] == f"linux:{MACHINE_ID}"

    host.interface("eth0", DOCK_MAC)
    assert host.check() is HostCheck.MISMATCH


def test_without_host_id_or_mac_a_random_id_is_persisted_and_stays_stable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(tmp_path)
    host.interface("lo", "00:00:00:00:00:00")
    caplog.set_level("WARNING")

    assert host.check() is HostCheck.FIRST_RUN
    assert "fingerprint_unavailable" in caplog.messages
    warned = next(r for r in caplog.records if r.getMessage() == "fingerprint_unavailable")
    assert warned.__dict__["clone_detection"] == "off"
    first = host.record()
    assert isinstance(first["host_id"], str)
    assert first["host_id"].startswith("random:")
    assert first["stable_mac"] == ""

    assert host.check() is HostCheck.MATCH
    assert host.check() is HostCheck.MATCH
    assert host.record() == first


def test_a_random_id_is_replaced_once_the_host_measures_something_real(
        tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.check()
    host.machine_id(MACHINE_ID)
    host.interface("eth0", ETH_MAC)

    assert host.check() is HostCheck.MATCH
    assert host.record()["host_id"] == f"linux:{MACHINE_ID}"
    host.machine_id(OTHER_ID)
    assert host.check() is HostCheck.MISMATCH


# --- measuring the host ----------------------------------------------------------------


def test_the_machine_id_falls_back_to_the_dbus_copy(host: FakeHost) -> None:
    host.machine_id(None)
    host.machine_id(f"  {OTHER_ID}  \nsecond line\n", where="var/lib/dbus/machine-id")

    assert current_identity(host.roots) == (f"linux:{OTHER_ID}", ETH_MAC)


def test_etc_machine_id_wins_over_the_dbus_copy(host: FakeHost) -> None:
    host.machine_id(OTHER_ID, where="var/lib/dbus/machine-id")

    assert current_identity(host.roots)[0] == f"linux:{MACHINE_ID}"


@pytest.mark.parametrize("content", ["", "\n", "   \n", "uninitialized\n"])
def test_an_empty_etc_machine_id_counts_as_missing(host: FakeHost, content: str) -> None:
    host.machine_id(content)

    assert current_identity(host.roots)[0] == ""
    host.machine_id(OTHER_ID, where="var/lib/dbus/machine-id")
    assert current_identity(host.roots)[0] == f"linux:{OTHER_ID}"


def test_virtual_and_loopback_interfaces_are_ignored(host: FakeHost) -> None:
    host.interface("eth0", None)
    for name in ("lo", "docker0", "veth123", "wg0", "br-1a2b", "tailscale0", "virbr0",
                 "vboxnet0", "tun0", "ap1", "Bridge0"):
        host.interface(name, "00:aa:bb:cc:dd:ee")

    assert current_identity(host.roots) == (f"linux:{MACHINE_ID}", "")

    host.interface("enp3s0", ETH_MAC)
    assert current_identity(host.roots)[1] == ETH_MAC


def test_interfaces_with_no_address_file_are_skipped(host: FakeHost) -> None:
    (host.root / "sys" / "class" / "net" / "eth1").mkdir()

    assert current_identity(host.roots)[1] == ETH_MAC


def test_a_missing_sysfs_means_no_mac(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.machine_id(MACHINE_ID)

    assert current_identity(host.roots) == (f"linux:{MACHINE_ID}", "")


def test_a_universal_mac_beats_a_locally_administered_one() -> None:
    local = "02:11:22:33:44:55"  # bit 0x02 of the first byte set
    assert pick_stable_mac({"eth0": local, "wlan0": "a4:83:e7:01:02:03"}) == (
        "a4:83:e7:01:02:03")
    assert pick_stable_mac({"eth0": local}) == local


def test_the_all_zero_mac_and_malformed_addresses_are_skipped() -> None:
    assert pick_stable_mac({"eth0": "00:00:00:00:00:00", "eth1": "not-a-mac",
                            "eth2": "00:1a:2b:3c:4d", "eth3": ""}) == ""
    assert pick_stable_mac({"eth0": "00:00:00:00:00:00", "eth9": ETH_MAC}) == ETH_MAC


def test_wired_comes_before_wireless_before_others_then_by_name() -> None:
    assert pick_stable_mac({"wlan0": "00:00:00:00:00:01", "eth0": "00:00:00:00:00:02"}) == (
        "00:00:00:00:00:02")
    assert pick_stable_mac({"wlan0": "00:00:00:00:00:01", "usb0": "00:00:00:00:00:03"}) == (
        "00:00:00:00:00:01")
    assert pick_stable_mac({"eth1": "00:00:00:00:00:04", "enp0s3": "00:00:00:00:00:05",
                            "eth0": "00:00:00:00:00:06"}) == "00:00:00:00:00:05"


def test_macs_are_lower_cased() -> None:
    assert pick_stable_mac({"eth0": "00:1A:2B:3C:4D:5E"}) == ETH_MAC


# --- macOS through the injected runner ---------------------------------------------------

IOREG_OUTPUT = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000217, registered>
    {
      "IOPlatformSerialNumber" = "C02XXXXXXX"
      "IOPlatformUUID" = "ABCD1234-5678-90EF-ABCD-1234567890EF"
      "model" = <"MacBookPro18,3">
    }
"""


def fake_run(output: str) -> tuple[Callable[[list[str]], str], list[list[str]]]:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> str:
        calls.append(argv)
        return output

    return run, calls


def test_darwin_reads_the_ioplatformuuid_through_ioreg(tmp_path: Path) -> None:
    run, calls = fake_run(IOREG_OUTPUT)
    roots = HostRoots(root=tmp_path, platform="darwin", run=run)

    assert current_identity(roots) == ("darwin:ABCD1234-5678-90EF-ABCD-1234567890EF", "")
    assert calls == [["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]]


def test_darwin_without_ioreg_falls_back_to_a_random_id(tmp_path: Path) -> None:
    def broken(argv: list[str]) -> str:
        raise FileNotFoundError(argv[0])

    host = FakeHost(tmp_path)
    roots = HostRoots(root=host.root, platform="darwin", run=broken)
    assert current_identity(roots) == ("", "")
    assert check_host(host.daemon_dir, roots).outcome is HostCheck.FIRST_RUN
    assert str(host.record()["host_id"]).startswith("random:")


def test_darwin_output_without_a_uuid_gives_no_host_id(tmp_path: Path) -> None:
    run, _ = fake_run('"IOPlatformSerialNumber" = "C02XXXXXXX"\n')

    assert current_identity(HostRoots(root=tmp_path, platform="darwin", run=run)) == ("", "")


def test_a_darwin_host_keeps_matching_across_wifi_mac_rotation(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    run, _ = fake_run(IOREG_OUTPUT)
    roots = HostRoots(root=host.root, platform="darwin", run=run)
    host.interface("en0", "3a:11:22:33:44:55")
    assert check_host(host.daemon_dir, roots).outcome is HostCheck.FIRST_RUN

    host.interface("en0", "7e:66:77:88:99:aa")
    assert check_host(host.daemon_dir, roots).outcome is HostCheck.MATCH_MAC_CHANGED
    assert check_host(host.daemon_dir, roots).outcome is HostCheck.MATCH


def test_other_platforms_read_no_host_id(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.machine_id(MACHINE_ID)

    assert current_identity(HostRoots(root=host.root, platform="win32"))[0] == ""
