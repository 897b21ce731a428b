"""libvirt ``<interface>`` renderer, matching Nova 34's libvirt VIF driver.

``render_interface(vif, opts)`` returns what
``nova.virt.libvirt.vif.LibvirtGenericVIFDriver.get_config(...).format_dom()``
returns for the same VIF, image, flavor and nova.conf (see
``docs/libvirt-rendering.md``), element for element and attribute for
attribute, except where Nova's output fails libvirt's own RNG schema: there
libvirt wins (``VifError``, or for 802.1Qbg one merged ``<parameters>``).
``tests/test_libvirt_render.py`` proves it against the real Nova code.

The code is deliberately shaped like Nova's, so a Nova change can be followed
line by line:

* :mod:`.constants` -- Nova's and libvirt's constants and schema patterns;
* :mod:`.config` -- ``InterfaceConf`` mirrors ``LibvirtConfigGuestInterface``,
  ``format_interface`` its ``format_dom``;
* :mod:`.base` -- ``get_base_config`` and the shared validators;
* :mod:`.ovs`, :mod:`.bridge`, :mod:`.direct` -- the per-type
  ``get_config_*`` / ``_set_config_VIF*`` methods, by family (OVS; bridge,
  tap and ethernet; direct, hostdev and vhost-user);
* :mod:`.driver` -- ``get_config``: dispatch and the os-vif path.

Pure: no host access, no I/O; stdlib only so ``vifwire render`` starts fast.
Anything that cannot be rendered raises ``VifError(port, field, problem)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element, indent, tostring

from vifwire.errors import VifError
from vifwire.renderers.libvirt.base import typename
from vifwire.renderers.libvirt.constants import OVS_STRATEGIES
from vifwire.renderers.libvirt.driver import Renderer
from vifwire.renderers.options import GuestOptions

__all__ = ["render_interface", "render_interface_xml", "OVS_STRATEGIES"]


def render_interface(vif: dict, opts: GuestOptions,
                     ovs_strategy: str | None = None) -> Element:
    """Render one VIF as Nova 34 would, as an ``<interface>`` element.

    ``hostdev_physical`` and ``ib_hostdev`` give a ``<hostdev>`` element, as
    in Nova.  ``ovs_strategy`` overrides Nova's OVS wiring choice (one of
    :data:`OVS_STRATEGIES`, ``None`` = decide as Nova does).  It applies only
    where Nova itself chooses between hybrid / virtualport / create_tap /
    delegate: ``ovs`` (and ``agilio_ovs`` falling through to it) with a
    vnic_type other than direct, vdpa, remote-managed (agilio: direct,
    virtio-forwarder); elsewhere it raises ``VifError``.
    """
    if not isinstance(vif, Mapping):
        raise VifError(None, "vif", f"must be a mapping, got {typename(vif)}")
    r = Renderer(vif, opts, ovs_strategy)
    return r.render()


def render_interface_xml(vif: dict, opts: GuestOptions,
                         ovs_strategy: str | None = None) -> str:
    """:func:`render_interface` serialised like Nova's ``to_xml()``.

    Byte for byte what lxml's pretty printer gives for the same tree (two
    space indent, ``<x/>`` without a space, trailing newline).  ElementTree
    writes ``" />"``; attribute values always escape ``>``, so that sequence
    only ever ends an empty element.
    """
    elem = render_interface(vif, opts, ovs_strategy)
    indent(elem, space="  ")
    return tostring(elem, encoding="unicode").replace(" />", "/>") + "\n"
