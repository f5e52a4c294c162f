"""Test hosts on one machine: network namespaces on a private bridge, each with its own address.

The hosts are this test run's own: a 10.x.y.0/24 no interface of the machine has yet, picked at
random so two runs at once do not collide, which exists only on the bridge it creates; the test
machine itself joins the bridge as .254 to talk to them. Everything is removed on close.
"""
import itertools
import os
import random
import shutil
import subprocess

_LANS = itertools.count()


def free_subnet() -> str:
    """A 10.x.y prefix (of a /24) that no address on this machine is in."""
    taken = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(1000):
        subnet = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
        if f" {subnet}." not in taken:
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the test hosts")


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns, "ip"] if netns else ["ip"]
    subprocess.run(prefix + list(args), check=True, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """Why namespaces can't be made here (not root, no iproute2, refused), or None if they can."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "iproute2 (ip) and util-linux (unshare) are needed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces are not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Lan:
    """A switch namespace with a bridge, hosts plugged into it, and this machine as a client."""

    def __init__(self):
        self.tag = f"t{os.getpid() % 10000}{next(_LANS) % 10}"  # this process's, and this Lan's
        self.subnet = free_subnet()
        self.switch = f"{self.tag}sw"
        self.hosts: dict[str, str] = {}  # name → address
        subprocess.run(["ip", "netns", "add", self.switch], check=True)
        _ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        _ip("link", "set", "br0", "up", netns=self.switch)
        self._plug(f"{self.tag}c", None, f"{self.subnet}.254")

    def namespace(self, host: str) -> str:
        return f"{self.tag}{host}"

    def add_host(self, host: str, number: int) -> str:
        """A new host with address SUBNET.NUMBER; returns the address."""
        netns = self.namespace(host)
        subprocess.run(["ip", "netns", "add", netns], check=True)
        _ip("link", "set", "lo", "up", netns=netns)
        address = f"{self.subnet}.{number}"
        self._plug(netns, netns, address)
        self.hosts[host] = address
        return address

    def _plug(self, name: str, netns: str | None, address: str) -> None:
        """A veth pair: one end in the host (or this machine), the other on the bridge."""
        inside, port = f"{name[-9:]}i", f"{name[-9:]}p"
        _ip("link", "add", inside, "type", "veth", "peer", "name", port)
        _ip("link", "set", port, "netns", self.switch)
        _ip("link", "set", port, "master", "br0", netns=self.switch)
        _ip("link", "set", port, "up", netns=self.switch)
        if netns:
            _ip("link", "set", inside, "netns", netns)
        _ip("addr", "add", f"{address}/24", "dev", inside, netns=netns)
        _ip("link", "set", inside, "up", netns=netns)

    def cut(self, host: str) -> None:
        """Take the host's link down, as if its cable were pulled."""
        netns = self.namespace(host)
        _ip("link", "set", f"{netns[-9:]}i", "down", netns=netns)

    def command(self, host: str, argv: list[str]) -> list[str]:
        """argv run on the host, under its own hostname (a UTS namespace), so RQ sees that name."""
        script = f'hostname {host} && exec "$@"'
        return ["ip", "netns", "exec", self.namespace(host), "unshare", "--uts", "sh", "-c", script, "sh"] + argv

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", f"{self.tag}c"[-9:] + "i"], capture_output=True)
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", self.namespace(host)], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)
