"""Reference oracle: render VIFs with the real Nova 34 libvirt VIF driver.

Run with the interpreter of the Nova venv (``tests/oracle/setup_nova_venv.sh``
creates ``.venv-nova``)::

    .venv-nova/bin/python tests/oracle/nova_render.py < cases.json

stdin is a JSON list of cases, stdout a JSON list of results in the same
order.  A case is::

    {"vif": {... Nova network_info VIF dict ...},
     "opts": {"virt_type": "kvm", "model": null, "queues": null,
              "rx_queue_size": null, "tx_queue_size": null, "packed": false,
              "bandwidth_in": {"average": null, "peak": null, "burst": null},
              "bandwidth_out": {...}, "vf_netdev": null,
              "vdpa_devices": {}, "vdpa_dev": null},
     "ovs_strategy": null}

(``opts`` mirrors ``vifwire.renderers.options.GuestOptions``; every key is
optional.)  A result is ``{"xml": "<interface ...>...</interface>"}`` (or
``<hostdev>``) or ``{"error": "<exception class name>", "stage": ...,
"message": "..."}`` where ``stage`` is ``"options"`` (Nova/oslo.config refused
the guest options: unknown model, queue size not 256/512/1024, ...) or
``"get_config"`` (the VIF driver raised).  Failures of this script's own
harness objects are not caught: they abort the run.

The XML comes from ``LibvirtGenericVIFDriver().get_config(instance, vif,
image_meta, flavor, virt_type).to_xml()`` with the VIF built by
``nova.network.model.VIF.hydrate``.  Guest options reach Nova the way they do
in production:

* ``model``          -> image property ``hw_vif_model``.  ``"none"`` (vifwire's
                        "no <model> element") -> ``[libvirt]
                        use_virtio_for_bridges = False`` and no image model,
                        which is how Nova ends up with no model.
* ``queues``         -> multiqueue on with Nova ending up at ``queues``
                        queue pairs: image ``hw_vif_multiqueue_enabled=True``,
                        ``flavor.vcpus = max(queues, 2)`` (Nova turns
                        multiqueue off below 2 vCPUs) and ``[libvirt]
                        max_queues = queues`` (the tap queue limit), so
                        ``_get_virtio_mq_settings`` gives min(vcpus,
                        max_queues) == queues -- for ``queues = 1`` that is a
                        2-vCPU guest on a host limited to one queue.  Without
                        ``queues``: 1 vCPU, no multiqueue.  The kernel release
                        seen by ``nova.virt.libvirt.vif`` is pinned to 6.1
                        anyway (Linux >= 5: no kernel limit).
* ``rx_queue_size``/``tx_queue_size`` -> ``[libvirt]rx_queue_size`` /
                        ``tx_queue_size`` (oslo.config enforces 256/512/1024).
* ``packed``         -> image ``hw_virtio_packed_ring=True``.
* ``bandwidth_in/out`` -> flavor extra specs ``quota:vif_inbound_average`` ...
                        ``quota:vif_outbound_burst`` (unset fields are absent).
* ``virt_type``      -> the ``virt_type`` argument and ``[libvirt]virt_type``.
* ``ovs_strategy``   -> the binding knob that makes Nova pick that wiring:
                        ``hybrid`` -> ``details.ovs_hybrid_plug = True``;
                        ``virtualport`` -> hybrid, create_tap and
                        delegate_create all false; ``create_tap`` ->
                        ``details.ovs_create_tap = True``; ``delegate`` and
                        ``manual`` -> ``delegate_create = True`` (Nova renders
                        the same ``type="ethernet"`` for both).
* ``vf_netdev``      -> there is no SR-IOV hardware here, so
                        ``nova.pci.utils.get_ifname_by_pci_address`` is
                        replaced: it validates the address with Nova's own
                        ``parse_address`` and returns ``vf_netdev`` (or raises
                        ``PciDeviceNotFoundById`` when it is null, like a host
                        without that VF).
* ``vdpa_devices``/``vdpa_dev`` -> there is no vDPA hardware either, so the
                        driver gets a stand-in ``Host`` whose
                        ``get_vdpa_device_path(pci_address)`` (Nova asks
                        libvirt for the vDPA node device whose parent is the
                        VF) answers ``vdpa_devices[pci_address]``, else
                        ``vdpa_dev``, else raises ``StopIteration`` as Nova's
                        does when the VF has no vDPA device.

``vif_type = "bridge"``: Nova 34 removed the Linux bridge VIF type
(``os_vif_util`` raises "no longer supported").  vifwire keeps Nova 33's
behaviour, so for that type only the oracle reinstates Nova 33's conversion
(a ``VIFBridge`` on ``network.bridge`` named after ``devname``, plugin
``linux_bridge``); everything downstream of the conversion is Nova 34's code.
Set ``"nova34_bridge": true`` in a case to get Nova 34's own refusal instead.
"""

from __future__ import annotations

import json
import os
import sys
import types
import warnings


def _setup():
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)

    import nova.conf
    from nova import objects

    conf = nova.conf.CONF
    conf([], project="nova", default_config_files=[], default_config_dirs=[])
    objects.register_all()

    import os_vif.objects

    os_vif.objects.register_all()

    from nova import exception
    from nova.network import model as network_model
    from nova.network import os_vif_util
    from nova.pci import utils as pci_utils
    from nova.virt.libvirt import vif as libvirt_vif

    # Deterministic _get_max_tap_queues(): pretend a Linux 6.1 kernel.
    real_uname = os.uname()
    fake_uname = os.uname_result(
        (real_uname.sysname, real_uname.nodename, "6.1.0-vifwire-oracle",
         real_uname.version, real_uname.machine))
    libvirt_vif.os = types.SimpleNamespace(uname=lambda: fake_uname)

    state = {"vf_netdev": None, "nova34_bridge": False, "vdpa_devices": {},
             "vdpa_dev": None}

    def get_ifname_by_pci_address(pci_addr, pf_interface=False):
        pci_utils.parse_address(pci_addr)
        if state["vf_netdev"] is None:
            raise exception.PciDeviceNotFoundById(id=pci_addr)
        return state["vf_netdev"]

    pci_utils.get_ifname_by_pci_address = get_ifname_by_pci_address

    # Nova 33's conversion for the Linux bridge VIF type (removed in 34).
    def nova33_bridge(vif):
        obj = os_vif_util._get_vif_instance(
            vif, os_vif.objects.vif.VIFBridge, plugin="linux_bridge",
            vif_name=os_vif_util._get_vif_name(vif))
        if vif["network"]["bridge"] is not None:
            obj.bridge_name = vif["network"]["bridge"]
        return obj

    nova34_convert = os_vif_util.nova_to_osvif_vif

    def nova_to_osvif_vif(vif):
        if (vif["type"] == network_model.VIF_TYPE_BRIDGE
                and not state["nova34_bridge"]):
            return nova33_bridge(vif)
        return nova34_convert(vif)

    libvirt_vif.os_vif_util.nova_to_osvif_vif = nova_to_osvif_vif

    class VdpaHost:
        """Stands in for nova.virt.libvirt.host.Host's vDPA lookup only."""

        def get_vdpa_device_path(self, pci_address):
            if pci_address in state["vdpa_devices"]:
                return state["vdpa_devices"][pci_address]
            if state["vdpa_dev"] is not None:
                return state["vdpa_dev"]
            raise StopIteration  # Host.get_vdpa_nodedev_by_address: next()

    state["host"] = VdpaHost()
    return conf, objects, network_model, libvirt_vif, state


_STRATEGY_KNOBS = {
    "hybrid": ({"ovs_hybrid_plug": True}, None),
    "virtualport": ({"ovs_hybrid_plug": False, "ovs_create_tap": False},
                    False),
    "create_tap": ({"ovs_hybrid_plug": False, "ovs_create_tap": True},
                   False),
    "delegate": ({"ovs_hybrid_plug": False, "ovs_create_tap": False}, True),
    "manual": ({"ovs_hybrid_plug": False, "ovs_create_tap": False}, True),
}


def _render_one(env, case):
    conf, objects, network_model, libvirt_vif, state = env
    opts = case.get("opts") or {}
    vif = json.loads(json.dumps(case["vif"]))

    strategy = case.get("ovs_strategy")
    if strategy is not None:
        details_knobs, delegate = _STRATEGY_KNOBS[strategy]
        vif["details"] = dict(vif.get("details") or {}, **details_knobs)
        if delegate is not None:
            vif["delegate_create"] = delegate

    virt_type = opts.get("virt_type", "kvm")
    model = opts.get("model")
    props = {}
    conf.clear_override("use_virtio_for_bridges", group="libvirt")
    if model is not None and str(model).lower() == "none":
        conf.set_override("use_virtio_for_bridges", False, group="libvirt")
    elif model is not None:
        props["hw_vif_model"] = model
    queues = opts.get("queues")
    vcpus = 1
    if queues is not None:
        props["hw_vif_multiqueue_enabled"] = True
        vcpus = max(queues, 2)
    if opts.get("packed"):
        props["hw_virtio_packed_ring"] = True

    extra_specs = {}
    for direction in ("inbound", "outbound"):
        bw = opts.get("bandwidth_in" if direction == "inbound"
                      else "bandwidth_out") or {}
        for key in ("average", "peak", "burst"):
            if bw.get(key) is not None:
                extra_specs["quota:vif_%s_%s" % (direction, key)] = str(
                    bw[key])

    # Harness objects: a failure here is a bug in this script, not Nova's
    # verdict on the case, so it is not caught.
    flavor = objects.Flavor(name="vifwire-oracle", vcpus=vcpus,
                            memory_mb=512, root_gb=1, extra_specs=extra_specs)
    instance = objects.Instance(
        uuid="7a8b9c0d-1e2f-4a5b-8c6d-7e8f9a0b1c2d",
        display_name="vifwire-oracle", project_id="demo")
    state["vf_netdev"] = opts.get("vf_netdev")
    state["nova34_bridge"] = bool(case.get("nova34_bridge"))
    state["vdpa_devices"] = {k.lower(): v for k, v in
                             (opts.get("vdpa_devices") or {}).items()}
    state["vdpa_dev"] = opts.get("vdpa_dev")

    # Nova's own validation of nova.conf values and image properties.
    try:
        conf.set_override("virt_type", virt_type, group="libvirt")
        conf.set_override("rx_queue_size", opts.get("rx_queue_size"),
                          group="libvirt")
        conf.set_override("tx_queue_size", opts.get("tx_queue_size"),
                          group="libvirt")
        conf.set_override("max_queues", queues, group="libvirt")
        image_meta = objects.ImageMeta.from_dict(
            {"name": "vifwire-oracle", "properties": props})
    except Exception as exc:
        return _error("options", exc)

    try:
        nw_vif = network_model.VIF.hydrate(vif)
        driver = libvirt_vif.LibvirtGenericVIFDriver(host=state["host"])
        cfg = driver.get_config(instance, nw_vif, image_meta, flavor,
                                virt_type)
        return {"xml": cfg.to_xml()}
    except Exception as exc:
        return _error("get_config", exc)


def _error(stage, exc):
    message = str(exc).splitlines()[0] if str(exc) else ""
    return {"error": type(exc).__name__, "stage": stage, "message": message}


def main():
    cases = json.load(sys.stdin)
    env = _setup()
    results = []
    for case in cases:
        results.append(_render_one(env, case))
    json.dump(results, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
