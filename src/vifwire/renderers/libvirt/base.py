"""What every vif type's rendering shares: the guest options, Nova's
``get_base_config`` and the small validators.

:class:`RendererBase` holds one VIF and its :class:`GuestOptions`; the
per-family classes (:mod:`.ovs`, :mod:`.bridge`, :mod:`.direct`) extend it
and :class:`~.driver.Renderer` combines them, the way Nova's
``LibvirtGenericVIFDriver`` carries all ``get_config_*`` methods on one class
(docs/libvirt-rendering.md, "What is rendered, per vif_type").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vifwire.errors import VifError
from vifwire.renderers.libvirt.config import InterfaceConf
from vifwire.renderers.libvirt.constants import (
    DEVICE_NAME,
    NIC_NAME_LEN,
    OVS_STRATEGIES,
    QUEUE_SIZES,
    SUPPORTED_VIF_MODELS,
    UINT_MAX,
    UNI_MAC,
    VIF_MODEL_ALL,
    VIF_MODEL_LEGACY,
    VIF_MODEL_VIRTIO,
    VIRT_TYPES,
    VNIC_NORMAL,
    VNIC_TYPES_DIRECT_PASSTHROUGH,
)
from vifwire.renderers.options import Bandwidth, GuestOptions


class RendererBase:
    """One VIF being rendered: its input, the checked options, the helpers."""

    def __init__(self, vif: Mapping, opts: GuestOptions,
                 ovs_strategy: str | None) -> None:
        self.vif = vif
        self.opts = opts
        self.port = port_label(vif.get("id"))
        self.strategy = ovs_strategy
        self.strategy_used = False
        details = vif.get("details") or {}
        if not isinstance(details, Mapping):
            self.fail("binding:vif_details",
                      f"must be a mapping, got {typename(details)}")
        self.details = details
        # VIF.hydrate keeps an explicit None; a missing key means normal.
        self.vnic_type = vif.get("vnic_type", VNIC_NORMAL)
        self._check_options()

    def fail(self, field: str, problem: str):
        raise VifError(self.port, field, problem)

    # -- guest options (what nova.conf / image / flavor validation refuses)

    def _check_options(self) -> None:
        o = self.opts
        if not isinstance(o, GuestOptions):
            self.fail("guest", f"must be GuestOptions, got {typename(o)}")
        if o.virt_type not in VIRT_TYPES:
            self.fail("guest.virt_type",
                      f"{o.virt_type!r} is not one of {', '.join(VIRT_TYPES)}")
        self.model_none = False
        self.model: str | None = None
        if o.model is not None:
            if not isinstance(o.model, str):
                self.fail("guest.model",
                          f"must be a string, got {typename(o.model)}")
            m = o.model.lower()
            if m == "none":
                self.model_none = True
            else:
                m = VIF_MODEL_LEGACY.get(m, m)
                if m not in VIF_MODEL_ALL:
                    self.fail("guest.model", f"{o.model!r} is not a known "
                              f"VIF model ({', '.join(VIF_MODEL_ALL)}, none)")
                self.model = m
        for name in ("rx_queue_size", "tx_queue_size"):
            v = getattr(o, name)
            if v is not None and (not is_int(v) or v not in QUEUE_SIZES):
                self.fail(f"guest.{name}", f"{v!r} is not one of 256, 512, "
                          "1024 (nova.conf [libvirt] choices)")
        if o.queues is not None and not is_int(o.queues):
            self.fail("guest.queues",
                      f"must be an integer, got {typename(o.queues)}")
        if o.queues is not None and o.queues < 1:
            # Nova's queue count is min(vCPUs, [libvirt]max_queues >= 1).
            self.fail("guest.queues", f"{o.queues} is not a queue count (>= 1)")
        if not isinstance(o.packed, bool):
            self.fail("guest.packed",
                      f"must be a boolean, got {typename(o.packed)}")
        for name in ("bandwidth_in", "bandwidth_out"):
            b = getattr(o, name)
            if not isinstance(b, Bandwidth):
                self.fail(f"guest.{name}",
                          f"must be a Bandwidth, got {typename(b)}")
            for key in ("average", "peak", "burst"):
                v = getattr(b, key)
                if v is not None and not is_int(v):
                    self.fail(f"guest.{name}.{key}",
                              f"must be an integer, got {typename(v)}")
        if o.vdpa_dev is not None and not isinstance(o.vdpa_dev, str):
            self.fail("guest.vdpa_dev",
                      f"must be a string, got {typename(o.vdpa_dev)}")
        if not isinstance(o.vdpa_devices, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in o.vdpa_devices.items()):
            self.fail("guest.vdpa_devices", "must map PCI addresses to "
                      "device paths (strings)")
        if self.strategy is not None and self.strategy not in OVS_STRATEGIES:
            self.fail("ovs_strategy", f"{self.strategy!r} is not one of "
                      f"{', '.join(OVS_STRATEGIES)}")

    # -- get_base_config

    def base_config(self, mac: str, vnic_type: Any) -> InterfaceConf:
        o = self.opts
        conf = InterfaceConf()
        conf.mac_addr = mac
        if vnic_type in VNIC_TYPES_DIRECT_PASSTHROUGH:
            conf.driver_packed = o.packed
            return conf

        rx = o.rx_queue_size
        model = self.model
        if (model is None and not self.model_none
                and o.virt_type in ("kvm", "qemu", "parallels")):
            model = VIF_MODEL_VIRTIO
        if model is not None and model not in SUPPORTED_VIF_MODELS[o.virt_type]:
            self.fail("guest.model", f"model {model!r} is not supported for "
                      f"virt_type {o.virt_type!r}")

        driver = None
        queues = None
        if model == VIF_MODEL_VIRTIO:
            if o.virt_type == "qemu":
                driver = "qemu"
            if o.virt_type in ("kvm", "parallels"):
                # _get_virtio_mq_settings: with multiqueue on, driver vhost
                # and the queue count, even 1 (vCPUs clamped to a tap limit
                # of 1); docs/libvirt-rendering.md, "Guest options and the
                # Nova input they stand for".
                if o.queues is not None:
                    driver = "vhost"
                    queues = o.queues
            if driver in ("vhost", None) and rx:
                driver = "vhost"
        # designer.set_vif_guest_frontend_config
        if model is not None:
            conf.model = model
        if driver is not None:
            conf.driver_name = driver
        if queues is not None:
            conf.vhost_queues = queues
        if rx:
            conf.vhost_rx_queue_size = rx
        conf.driver_packed = o.packed
        return conf

    def bandwidth(self, conf: InterfaceConf) -> None:
        """designer.set_vif_bandwidth_config; rendered rates must be >= 1."""
        for name in ("bandwidth_in", "bandwidth_out"):
            b = getattr(self.opts, name)
            if b.average is None:
                continue
            for key in ("average", "peak", "burst"):
                v = getattr(b, key)
                if v is not None and not 1 <= v <= UINT_MAX:
                    self.fail(f"guest.{name}.{key}", f"{v} is outside "
                              f"libvirt's range 1-{UINT_MAX}")
        conf.bw_in = self.opts.bandwidth_in
        conf.bw_out = self.opts.bandwidth_out

    # -- shared helpers (os_vif_util / designer / network model)

    def net_meta(self, net: Mapping) -> Mapping:
        """``Network.hydrate``: meta, overridden by unknown top-level keys."""
        meta = net.get("meta", {})
        if not isinstance(meta, Mapping):
            self.fail("network.meta", f"must be a mapping, got {typename(meta)}")
        extra = {k: v for k, v in net.items()
                 if k not in ("id", "bridge", "label", "subnets", "meta")}
        return {**meta, **extra} if extra else meta

    def vif_name(self) -> str:
        """As Nova's ``_get_vif_name`` (nova/network/os_vif_util.py): devname, else 'nic' + port id."""
        devname = self.vif.get("devname")
        if devname is not None:
            if not isinstance(devname, (str, int)) or isinstance(devname, bool):
                self.fail("devname", f"must be a string, got {typename(devname)}")
            return str(devname)
        return ("nic" + self.vif["id"])[:NIC_NAME_LEN]

    def network_bridge(self) -> tuple[str | None, str]:
        bridge = self.vif["network"].get("bridge")
        if bridge is not None and (not isinstance(bridge, (str, int))
                                   or isinstance(bridge, bool)):
            self.fail("network.bridge",
                      f"must be a string, got {typename(bridge)}")
        return (None if bridge is None else str(bridge)), "network.bridge"

    def ethernet(self, conf: InterfaceConf, dev: Any, field: str = "devname") -> None:
        """designer.set_vif_host_backend_ethernet_config."""
        conf.net_type = "ethernet"
        conf.target_dev = self.devname(dev, field)

    def devname(self, dev: Any, field: str) -> str:
        if not isinstance(dev, str) or not DEVICE_NAME.match(dev):
            self.fail(field, f"{dev!r} is not a valid device name "
                      "(libvirt: letters, digits, _ . - \\ : /)")
        return dev

    # -- legacy path basics (get_config_* before the per-type part)

    def _legacy_mac(self) -> str:
        """The raw address: Nova's legacy path does not normalise it."""
        mac = self.vif.get("address")
        if not isinstance(mac, str):
            self.fail("address", "is required (the port's MAC address)")
        if not UNI_MAC.match(mac):
            self.fail("address", f"{mac!r} is not a unicast MAC address "
                      "in libvirt's xx:xx:xx:xx:xx:xx form")
        return mac

    def legacy_base(self) -> InterfaceConf:
        return self.base_config(self._legacy_mac(), self.vnic_type)

    def legacy_devname(self) -> str:
        dev = self.vif.get("devname")
        if dev is None:
            self.fail("devname", "is required: the tap must be named so it "
                      "can be wired (Nova would let libvirt pick vnetN)")
        return self.devname(dev, "devname")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def port_label(port_id: Any) -> str | None:
    if isinstance(port_id, str) and port_id:
        return port_id
    return None
