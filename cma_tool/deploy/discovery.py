"""Finding a board's USB-serial console with pyudev.

A board file names its console adapter by udev facts, not by ``/dev/ttyUSB3``
(which changes with plug order): ``console: udev: {ID_SERIAL_SHORT: A5XK3RJT}``.

Match rules (the labgrid convention, our own code):

- ``KEY: value`` must equal a fact of the tty device itself;
- ``@KEY: value`` must equal a fact of the device or any of its ancestors
  (the USB interface, the USB device, the hub...), each ``@`` key on its own;
- facts are the udev properties (``ID_SERIAL_SHORT``, ``ID_PATH``,
  ``ID_USB_INTERFACE_NUM``...), plus ``sys_name``, ``subsystem``, ``devtype``,
  ``driver``, ``devnode`` and ``ATTR{name}`` for a sysfs attribute
  (``@ATTR{serial}``, ``@ATTR{bInterfaceNumber}``, ``ATTR{port_number}``),
  which also work where no udev daemon fills in the ``ID_*`` properties
  (containers, some lab hosts);
- values compare as exact strings.

The rule logic works on plain mappings (one per device, the device first and
then its ancestors), so it is the same code for pyudev devices and for tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import pyudev
import yaml

from cma_tool.errors import ConfigError

#: One device and its ancestors, nearest first: what a rule is matched against.
Chain = Sequence[Mapping[str, str]]

_PSEUDO_KEYS = ("sys_name", "subsystem", "devtype", "driver", "devnode")


class DeviceFacts(Mapping[str, str]):
    """The facts of one pyudev device as a read-only mapping; sysfs attributes are read on demand."""

    def __init__(self, device: pyudev.Device) -> None:
        self._device = device
        self._properties = {str(k): str(v) for k, v in device.properties.items()}
        pseudo = {
            "sys_name": device.sys_name,
            "subsystem": device.subsystem,
            "devtype": device.device_type,
            "driver": device.driver,
            "devnode": device.device_node,
        }
        self._pseudo = {k: str(v) for k, v in pseudo.items() if v is not None}

    def __getitem__(self, key: str) -> str:
        if key in self._pseudo:
            return self._pseudo[key]
        if key.startswith("ATTR{") and key.endswith("}"):
            try:
                return str(self._device.attributes.asstring(key[5:-1])).strip()
            except (KeyError, OSError, UnicodeDecodeError):
                raise KeyError(key) from None
        return self._properties[key]

    def __iter__(self) -> Iterator[str]:
        # Attributes are not listed: reading every sysfs file of every device would be slow.
        yield from self._pseudo
        yield from self._properties

    def __len__(self) -> int:
        return len(self._pseudo) + len(self._properties)


def device_chain(device: pyudev.Device) -> list[Mapping[str, str]]:
    return [DeviceFacts(device), *(DeviceFacts(a) for a in device.ancestors)]


#: A rule as the board file gives it: a mapping, or the (key, value) pairs of Console.udev_match.
RuleLike = Mapping[str, str] | Iterable[tuple[str, str]]


def check_rule(match: RuleLike, where: str = "console: udev") -> dict[str, str]:
    """The rule as a dict, once it is known to be usable; ConfigError otherwise."""
    match = dict(match)
    problems = []
    if not match:
        problems.append("is empty; it would match every serial port")
    for key, value in match.items():
        if not isinstance(key, str) or key.lstrip("@") == "":
            problems.append(f"has an empty key {key!r}")
        elif not isinstance(value, str):
            problems.append(f"key {key!r}: value {value!r} must be a string (quote it in YAML)")
    if problems:
        raise ConfigError(f"{where}: the udev match rule " + "; ".join(problems),
                          hint="run `cma-tool suggest` with the adapter plugged in to get a rule")
    return dict(match)


def rule_matches(match: Mapping[str, str], chain: Chain) -> bool:
    """Whether a device (``chain[0]``, then its ancestors) satisfies every key of the rule."""
    if not chain:
        return False
    for key, wanted in match.items():
        if key.startswith("@"):
            name = key[1:]
            if not any(facts.get(name) == wanted for facts in chain):
                return False
        elif chain[0].get(key) != wanted:
            return False
    return True


@dataclass(frozen=True)
class SerialAdapter:
    """A USB-serial port as the host sees it."""

    device_node: str  # /dev/ttyUSB0
    serial_short: str | None  # ID_SERIAL_SHORT (the chip's serial number), or the USB serial attribute
    vendor_id: str | None  # ID_VENDOR_ID, e.g. 0403 (FTDI)
    model_id: str | None  # ID_MODEL_ID, e.g. 6011 (FT4232H)
    id_path: str | None  # ID_PATH: the physical USB port, e.g. pci-0000:00:14.0-usb-0:2.2:1.0
    interface_number: str | None  # bInterfaceNumber: which port of a multi-interface chip (FT2232/FT4232)
    port_number: str | None  # usb-serial port_number: which port of a multi-port interface
    description: str  # vendor and model names, for people
    driver: str | None  # ftdi_sio, cp210x, pl2303, cdc_acm...


def adapter_from_chain(chain: Chain) -> SerialAdapter | None:
    """Describe a tty device if one of its ancestors is a USB device; None otherwise."""
    if not chain or "devnode" not in chain[0]:
        return None
    interface = next((f for f in chain if f.get("subsystem") == "usb" and f.get("devtype") == "usb_interface"), None)
    usb_device = next((f for f in chain if f.get("subsystem") == "usb" and f.get("devtype") == "usb_device"), None)
    if interface is None and usb_device is None:
        return None
    tty = chain[0]

    def fact(prop: str, attr: str, where: Mapping[str, str] | None) -> str | None:
        return tty.get(prop) or (where.get(f"ATTR{{{attr}}}") if where is not None else None)

    port_number = next((f.get("ATTR{port_number}") for f in chain if f.get("ATTR{port_number}")), None)
    names = [
        tty.get("ID_VENDOR_FROM_DATABASE") or fact("ID_VENDOR", "manufacturer", usb_device),
        tty.get("ID_MODEL_FROM_DATABASE") or fact("ID_MODEL", "product", usb_device),
    ]
    usb_driver = interface.get("driver") if interface is not None else None
    return SerialAdapter(
        device_node=tty["devnode"],
        serial_short=fact("ID_SERIAL_SHORT", "serial", usb_device),
        vendor_id=fact("ID_VENDOR_ID", "idVendor", usb_device),
        model_id=fact("ID_MODEL_ID", "idProduct", usb_device),
        id_path=tty.get("ID_PATH"),
        interface_number=fact("ID_USB_INTERFACE_NUM", "bInterfaceNumber", interface),
        port_number=port_number,
        description=" ".join(n for n in names if n) or "USB serial adapter",
        driver=tty.get("ID_USB_DRIVER") or usb_driver,
    )


def suggest_rule(chain: Chain, everyone: Sequence[Chain]) -> dict[str, str]:
    """The shortest rule, from stable facts, that picks ``chain`` and no other device in ``everyone``.

    Preference: the adapter's serial number (survives moving to another USB
    port), then the interface and port number that tell the ports of one chip
    apart, then the physical port path (for adapters without a serial number).
    """
    tty = chain[0]
    interface = next((f for f in chain if f.get("devtype") == "usb_interface"), {})
    usb_device = next((f for f in chain if f.get("devtype") == "usb_device"), {})
    port_holder = next((f for f in chain if f.get("ATTR{port_number}")), {})
    serial = tty.get("ID_SERIAL_SHORT")
    path = tty.get("ID_PATH")
    # Who the adapter is: its serial number, or failing that where it is plugged in.
    identities: list[tuple[str, str | None]] = [
        ("ID_SERIAL_SHORT", serial),
        ("@ATTR{serial}", usb_device.get("ATTR{serial}")),
        ("ID_PATH", path),
        ("@sys_name", usb_device.get("sys_name")),
    ]
    # Which of its ports.
    narrowing: list[tuple[str, str | None]] = [
        ("ID_USB_INTERFACE_NUM", tty.get("ID_USB_INTERFACE_NUM")),
        ("@ATTR{bInterfaceNumber}", None if tty.get("ID_USB_INTERFACE_NUM") else interface.get("ATTR{bInterfaceNumber}")),
        ("@ATTR{port_number}", port_holder.get("ATTR{port_number}")),
        ("ID_PATH", path),
        ("@sys_name", None if path else usb_device.get("sys_name")),
        ("devnode", tty.get("devnode")),  # the last resort: not stable across plug order
    ]
    others = [c for c in everyone if c is not chain]
    rule = next(({k: v} for k, v in identities if v), {})
    for key, value in narrowing:
        still = sum(1 for c in others if rule_matches(rule, c))
        if still == 0:
            break
        if not value or key in rule:
            continue
        narrowed = {**rule, key: value}
        if sum(1 for c in others if rule_matches(narrowed, c)) < still:
            rule = narrowed
    return rule


def _tty_chains(context: pyudev.Context | None) -> list[list[Mapping[str, str]]]:
    ctx = context if context is not None else pyudev.Context()
    return [device_chain(d) for d in ctx.list_devices(subsystem="tty") if d.device_node]


def list_adapters(context: pyudev.Context | None = None) -> list[SerialAdapter]:
    """Every USB-serial port attached now, sorted by device node."""
    adapters = (adapter_from_chain(c) for c in _tty_chains(context))
    return sorted((a for a in adapters if a is not None), key=lambda a: a.device_node)


def _describe(adapter: SerialAdapter) -> str:
    ids = f"{adapter.vendor_id or '????'}:{adapter.model_id or '????'}"
    extra = [f"serial {adapter.serial_short}" if adapter.serial_short else "no serial number"]
    if adapter.interface_number is not None:
        extra.append(f"interface {adapter.interface_number}")
    if adapter.port_number is not None:
        extra.append(f"port {adapter.port_number}")
    if adapter.id_path:
        extra.append(f"path {adapter.id_path}")
    return f"{adapter.device_node}  {ids} {adapter.description} ({', '.join(extra)})"


def _attached_text(context: pyudev.Context | None) -> str:
    adapters = list_adapters(context)
    if not adapters:
        return "no USB-serial adapters are attached"
    return "attached USB-serial adapters:\n" + "\n".join(f"    {_describe(a)}" for a in adapters)


def _resolve(rule: dict[str, str], context: pyudev.Context | None) -> list[str]:
    return sorted({c[0]["devnode"] for c in _tty_chains(context) if rule_matches(rule, c)})


def find_console(match: RuleLike, *, context: pyudev.Context | None = None) -> str:
    """The /dev path of the one serial device the rule matches; ConfigError for none or several."""
    rule = check_rule(match)
    found = _resolve(rule, context)
    if len(found) == 1:
        return found[0]
    raise _not_one(rule, found, context)


def _not_one(rule: dict[str, str], found: list[str], context: pyudev.Context | None, waited: float = 0) -> ConfigError:
    shown = ", ".join(f"{k}={v}" for k, v in rule.items())
    if found:
        return ConfigError(f"console: udev match {{{shown}}} fits {len(found)} serial devices ({', '.join(found)}); "
                           f"it must fit exactly one\n{_attached_text(context)}",
                           hint="add a key that tells them apart (see `cma-tool suggest`)")
    after = f" after waiting {waited:.1f} s" if waited else ""
    return ConfigError(f"console: no serial device matches udev rule {{{shown}}}{after}\n{_attached_text(context)}",
                       hint="plug the adapter in, or run `cma-tool suggest` to see the rules that fit")


def wait_for_console(match: RuleLike, timeout: float, *, context: pyudev.Context | None = None) -> str:
    """Like :func:`find_console`, but waits up to ``timeout`` s for the adapter to (re)appear.

    Adapters powered from the board, or reset with it, re-enumerate and are
    missing for a moment. Several matches end the wait at once: waiting will
    not make an ambiguous rule precise.
    """
    rule = check_rule(match)
    seen: list[str] = []

    def attempt() -> str | None:
        found = _resolve(rule, context)
        if len(found) > 1:
            raise _not_one(rule, found, context)
        seen[:] = found
        return found[0] if found else None

    start = time.monotonic()
    node = poll_with_backoff(attempt, timeout)
    if node is None:
        raise _not_one(rule, seen, context, waited=time.monotonic() - start)
    return node


def poll_with_backoff(
    attempt: Callable[[], str | None],
    timeout: float,
    *,
    first_pause: float = 0.05,
    longest_pause: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Call ``attempt`` until it returns a value or ``timeout`` passes; pauses double up to ``longest_pause``."""
    deadline = clock() + timeout
    pause = first_pause
    while True:
        result = attempt()
        if result is not None:
            return result
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(pause, left))
        pause = min(pause * 2, longest_pause)


def suggestion_yaml(rule: Mapping[str, str]) -> str:
    """The board-file snippet for a rule (YAML quoting for ``@`` keys and numeric-looking values)."""
    return yaml.safe_dump({"console": {"udev": dict(rule)}}, default_flow_style=False, sort_keys=False,
                          default_style=None)


def suggest_cli(*, out: TextIO | None = None, context: pyudev.Context | None = None) -> int:
    """Print each attached USB-serial adapter with a board-file snippet that selects it. Returns 0."""
    stream = out if out is not None else sys.stdout
    chains = _tty_chains(context)
    usb = [(c, a) for c in chains if (a := adapter_from_chain(c)) is not None]
    if not usb:
        stream.write("No USB-serial adapters are attached.\n"
                     "Plug in the board's console adapter and run this again.\n")
        return 0
    for chain, adapter in sorted(usb, key=lambda pair: pair[1].device_node):
        rule = suggest_rule(chain, chains)
        stream.write(f"{_describe(adapter)}\n")
        if "devnode" in rule:
            stream.write("  (no stable fact tells this port apart; the rule below uses the device node)\n")
        stream.write("".join(f"  {line}\n" for line in suggestion_yaml(rule).splitlines()))
        stream.write("\n")
    return 0
