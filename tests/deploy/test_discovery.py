"""USB-serial discovery: rule matching on plain facts, and on this machine's real udev devices.

This machine has no USB serial adapters, so the adapter shapes (an FTDI
FT4232H quad, two serial-less CH340s, a container without a udev database)
are written out as the facts udev and sysfs give for them; the pyudev side is
exercised on the tty devices that do exist here, with expected answers worked
out from /sys directly rather than through pyudev.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from cma_tool.deploy.discovery import (
    DeviceFacts,
    adapter_from_chain,
    check_rule,
    find_console,
    list_adapters,
    poll_with_backoff,
    rule_matches,
    suggest_cli,
    suggest_rule,
    suggestion_yaml,
    wait_for_console,
)
from cma_tool.errors import ConfigError

HUB = {"subsystem": "usb", "devtype": "usb_device", "sys_name": "1-2", "ATTR{idVendor}": "05e3"}


def ft4232h_port(n: int, *, udev_db: bool = True) -> list[Mapping[str, str]]:
    """One of the four ports of an FT4232H (one USB interface per port), as udev and sysfs describe it."""
    props = {
        "DEVNAME": f"/dev/ttyUSB{n}", "SUBSYSTEM": "tty",
        "ID_SERIAL_SHORT": "FT4ABCDE", "ID_VENDOR_ID": "0403", "ID_MODEL_ID": "6011",
        "ID_VENDOR": "FTDI", "ID_MODEL": "Quad_RS232-HS", "ID_USB_INTERFACE_NUM": f"{n:02d}",
        "ID_USB_DRIVER": "ftdi_sio", "ID_PATH": f"pci-0000:00:14.0-usb-0:2.1:1.{n}",
    } if udev_db else {"DEVNAME": f"/dev/ttyUSB{n}", "SUBSYSTEM": "tty"}
    return [
        {"sys_name": f"ttyUSB{n}", "subsystem": "tty", "devnode": f"/dev/ttyUSB{n}", **props},
        {"sys_name": f"ttyUSB{n}", "subsystem": "usb-serial", "driver": "ftdi_sio", "ATTR{port_number}": "0"},
        {"sys_name": f"1-2.1:1.{n}", "subsystem": "usb", "devtype": "usb_interface", "driver": "ftdi_sio",
         "ATTR{bInterfaceNumber}": f"{n:02d}"},
        {"sys_name": "1-2.1", "subsystem": "usb", "devtype": "usb_device", "ATTR{idVendor}": "0403",
         "ATTR{idProduct}": "6011", "ATTR{serial}": "FT4ABCDE", "ATTR{manufacturer}": "FTDI",
         "ATTR{product}": "Quad RS232-HS"},
        HUB,
    ]


def ch340(n: int, hub_port: int) -> list[Mapping[str, str]]:
    """A CH340 adapter: no serial number, so only its USB port tells two of them apart."""
    path = f"pci-0000:00:14.0-usb-0:2.{hub_port}:1.0"
    return [
        {"sys_name": f"ttyUSB{n}", "subsystem": "tty", "devnode": f"/dev/ttyUSB{n}", "ID_VENDOR_ID": "1a86",
         "ID_MODEL_ID": "7523", "ID_PATH": path, "ID_USB_INTERFACE_NUM": "00"},
        {"sys_name": f"ttyUSB{n}", "subsystem": "usb-serial", "driver": "ch341-uart", "ATTR{port_number}": "0"},
        {"sys_name": f"1-2.{hub_port}:1.0", "subsystem": "usb", "devtype": "usb_interface", "driver": "ch341",
         "ATTR{bInterfaceNumber}": "00"},
        {"sys_name": f"1-2.{hub_port}", "subsystem": "usb", "devtype": "usb_device", "ATTR{idVendor}": "1a86",
         "ATTR{idProduct}": "7523"},
        HUB,
    ]


UART: list[Mapping[str, str]] = [{"sys_name": "ttyS0", "subsystem": "tty", "devnode": "/dev/ttyS0"},
        {"sys_name": "00:00", "subsystem": "pnp", "driver": "serial"}]


# --- rules on plain facts ---------------------------------------------------------------------------


def test_plain_keys_look_at_the_device_only_and_at_keys_at_its_ancestors_too() -> None:
    port2 = ft4232h_port(2)
    assert rule_matches({"ID_SERIAL_SHORT": "FT4ABCDE"}, port2)
    assert not rule_matches({"ATTR{bInterfaceNumber}": "02"}, port2)  # an interface fact, not the tty's
    assert rule_matches({"@ATTR{bInterfaceNumber}": "02"}, port2)
    assert rule_matches({"@sys_name": "1-2"}, port2)  # the hub, two levels up
    assert rule_matches({"@sys_name": "ttyUSB2"}, port2)  # @ includes the device itself
    assert not rule_matches({"@ATTR{bInterfaceNumber}": "03"}, port2)
    assert not rule_matches({"ID_SERIAL_SHORT": "FT4ABCDE", "ID_USB_INTERFACE_NUM": "01"}, port2)
    assert not rule_matches({"ID_SERIAL_SHORT": "ft4abcde"}, port2)  # exact strings
    # Each @ key may be satisfied by a different ancestor.
    assert rule_matches({"@driver": "ftdi_sio", "@ATTR{idVendor}": "05e3"}, port2)


def test_adapter_facts_from_udev_properties() -> None:
    adapter = adapter_from_chain(ft4232h_port(3))
    assert adapter is not None
    assert (adapter.device_node, adapter.serial_short, adapter.vendor_id, adapter.model_id) == (
        "/dev/ttyUSB3", "FT4ABCDE", "0403", "6011")
    assert (adapter.interface_number, adapter.port_number, adapter.driver) == ("03", "0", "ftdi_sio")
    assert adapter.id_path == "pci-0000:00:14.0-usb-0:2.1:1.3"


def test_adapter_facts_without_a_udev_database_come_from_sysfs() -> None:
    adapter = adapter_from_chain(ft4232h_port(1, udev_db=False))
    assert adapter is not None
    assert (adapter.serial_short, adapter.vendor_id, adapter.model_id, adapter.interface_number) == (
        "FT4ABCDE", "0403", "6011", "01")
    assert adapter.description == "FTDI Quad RS232-HS"
    assert adapter.id_path is None


def test_a_uart_is_not_a_usb_adapter() -> None:
    assert adapter_from_chain(UART) is None


def picks(rule: Mapping[str, str], everyone: Sequence[Sequence[Mapping[str, str]]]) -> list[str]:
    return [c[0]["devnode"] for c in everyone if rule_matches(rule, c)]


def test_suggestions_pick_exactly_one_port() -> None:
    quad = [ft4232h_port(n) for n in range(4)]
    everyone: list[list[Mapping[str, str]]] = [*quad, UART]
    assert suggest_rule(quad[2], everyone) == {"ID_SERIAL_SHORT": "FT4ABCDE", "ID_USB_INTERFACE_NUM": "02"}
    single: list[list[Mapping[str, str]]] = [ft4232h_port(0), UART]
    assert suggest_rule(single[0], single) == {"ID_SERIAL_SHORT": "FT4ABCDE"}
    cheap = [ch340(0, 3), ch340(1, 4)]
    assert suggest_rule(cheap[1], cheap) == {"ID_PATH": "pci-0000:00:14.0-usb-0:2.4:1.0"}
    bare = [ft4232h_port(n, udev_db=False) for n in range(4)]
    rule = suggest_rule(bare[1], bare)
    assert rule == {"@ATTR{serial}": "FT4ABCDE", "@ATTR{bInterfaceNumber}": "01"}
    for group in (everyone, cheap, bare):
        for chain in group:
            assert picks(suggest_rule(chain, group), group) == [chain[0]["devnode"]]


def test_suggestion_yaml_keeps_strings_and_at_keys() -> None:
    rule = {"ID_SERIAL_SHORT": "0001", "@ATTR{bInterfaceNumber}": "01", "ID_PATH": "pci-0000:00:14.0-usb-0:2"}
    text = suggestion_yaml(rule)
    assert yaml.safe_load(text) == {"console": {"udev": rule}}


@pytest.mark.parametrize(
    ("rule", "message"),
    [({}, "is empty"), ({"ID_USB_INTERFACE_NUM": 1}, "must be a string"), ({"@": "x"}, "empty key")],
)
def test_unusable_rules_are_configuration_errors(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_rule(rule)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_longest_pause_and_stops_at_the_deadline() -> None:
    now = [0.0]
    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)
        now[0] += s

    assert poll_with_backoff(lambda: None, 3.0, sleep=sleep, clock=lambda: now[0]) is None
    assert pauses == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 0.45])
    answers = iter([None, None, "/dev/ttyUSB0"])
    assert poll_with_backoff(lambda: next(answers), 10.0, sleep=lambda s: None) == "/dev/ttyUSB0"


# --- real udev devices on this machine --------------------------------------------------------------


def sysfs_parent_dirs(tty: str) -> list[Path]:
    """The device folders above /sys/class/tty/<tty>, read from sysfs without pyudev."""
    device = Path(os.path.realpath(f"/sys/class/tty/{tty}"))
    return [p for p in device.parents if (p / "uevent").exists()]


def needs_ttys0() -> None:
    if not Path("/dev/ttyS0").exists() or not Path("/sys/class/tty/ttyS0/device").exists():
        pytest.skip("no /dev/ttyS0 backed by hardware here")


def test_facts_of_a_real_device() -> None:
    needs_ttys0()
    import pyudev

    facts = DeviceFacts(pyudev.Devices.from_device_file(pyudev.Context(), "/dev/ttyS0"))
    assert facts["devnode"] == "/dev/ttyS0"
    assert facts["sys_name"] == "ttyS0"
    assert facts["subsystem"] == "tty"
    assert facts["DEVNAME"] == "/dev/ttyS0"
    assert facts["ATTR{port}"] == Path("/sys/class/tty/ttyS0/port").read_text().strip()
    assert "ATTR{no_such_attribute}" not in facts


def test_find_console_on_real_devices() -> None:
    needs_ttys0()
    assert find_console({"DEVNAME": "/dev/ttyS0"}) == "/dev/ttyS0"
    assert find_console((("DEVNAME", "/dev/ttyS0"),)) == "/dev/ttyS0"  # Console.udev_match's shape
    port = Path("/sys/class/tty/ttyS0/port").read_text().strip()
    irq = Path("/sys/class/tty/ttyS0/irq").read_text().strip()
    assert find_console({"sys_name": "ttyS0", "ATTR{port}": port, "ATTR{irq}": irq}) == "/dev/ttyS0"
    parent = Path(os.path.realpath("/sys/class/tty/ttyS0/device"))
    with_parent = [t.name for t in Path("/sys/class/tty").iterdir() if parent in sysfs_parent_dirs(t.name)]
    if with_parent == ["ttyS0"]:
        assert find_console({"@sys_name": parent.name}) == "/dev/ttyS0"
    subsystem = Path(os.path.realpath(parent / "subsystem")).name
    assert find_console({"@subsystem": subsystem, "sys_name": "ttyS0"}) == "/dev/ttyS0"
    with pytest.raises(ConfigError, match="no serial device matches"):
        find_console({"@subsystem": subsystem, "sys_name": "ttyS0", "ATTR{port}": "0xdead"})


def test_a_rule_that_fits_several_devices_is_refused() -> None:
    nodes = [t.name for t in Path("/sys/class/tty").iterdir() if Path(f"/dev/{t.name}").exists()]
    if len(nodes) < 2:
        pytest.skip("fewer than two tty devices here")
    with pytest.raises(ConfigError, match=r"fits \d+ serial devices .*must fit exactly one"):
        find_console({"subsystem": "tty"})
    with pytest.raises(ConfigError, match="fits") as err:
        wait_for_console({"subsystem": "tty"}, timeout=60)  # ambiguity ends the wait at once
    assert "after waiting" not in str(err.value)


def usb_ttys_in_sysfs() -> list[str]:
    return sorted(f"/dev/{t.name}" for t in Path("/sys/class/tty").iterdir()
                  if any((p / "bInterfaceNumber").exists() for p in sysfs_parent_dirs(t.name)))


def test_list_adapters_agrees_with_sysfs() -> None:
    assert [a.device_node for a in list_adapters()] == usb_ttys_in_sysfs()


def test_no_match_names_what_is_attached_and_the_wait_gives_up() -> None:
    rule = {"ID_SERIAL_SHORT": "NO-SUCH-ADAPTER"}
    with pytest.raises(ConfigError) as err:
        wait_for_console(rule, timeout=0.3)
    text = str(err.value)
    assert "no serial device matches udev rule {ID_SERIAL_SHORT=NO-SUCH-ADAPTER} after waiting" in text
    attached = usb_ttys_in_sysfs()
    if attached:
        assert all(node in text for node in attached)
    else:
        assert "no USB-serial adapters are attached" in text
    assert "cma-tool suggest" in str(err.value)


def test_suggest_cli_on_this_machine() -> None:
    out = io.StringIO()
    assert suggest_cli(out=out) == 0
    attached = usb_ttys_in_sysfs()
    if attached:
        assert all(node in out.getvalue() for node in attached)
        assert out.getvalue().count("console:") == len(attached)
    else:
        assert out.getvalue().startswith("No USB-serial adapters are attached.")
