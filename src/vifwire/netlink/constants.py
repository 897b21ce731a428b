"""The kernel uapi numbers and message layouts vifwire speaks.

Values are from the kernel's uapi headers: linux/netlink.h,
linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h, linux/neighbour.h,
linux/net_namespace.h and linux/if_tun.h. Names are the kernel's, so they
can be grepped for there.
"""

from __future__ import annotations

import struct

# linux/netlink.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x8, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 11, 12

# linux/rtnetlink.h: message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWNSID, RTM_GETNSID = 88, 90

# linux/if_link.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 3, 4, 5
IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 10, 18, 20
IFLA_GROUP, IFLA_NET_NS_FD, IFLA_EXT_MASK = 27, 28, 29
IFLA_LINK_NETNSID, IFLA_TARGET_NETNSID = 37, 46
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1  # linux/veth.h
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_MACVLAN_MODE = 1
IFLA_VLAN_ID = 1
IFLA_TUN_TYPE, IFLA_TUN_MULTI_QUEUE = 3, 7
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1  # linux/if.h

#: ``enum macvlan_mode`` by the names ``ip link ... type macvtap mode`` uses.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}

# linux/rtnetlink.h: routes
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTNH_F_ONLINK, RTPROT_BOOT = 0x4, 3
RT_TABLE_MAIN, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 254, 0, 253, 1
RTM_F_FIB_MATCH = 0x2000

# linux/if_addr.h: addresses
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80

# linux/neighbour.h
NDA_DST = 1
NTF_PROXY, NUD_PERMANENT = 0x08, 0x80

# linux/net_namespace.h
NETNSA_NSID, NETNSA_FD = 1, 3

# linux/if_tun.h
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TUN, IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0001, 0x0002, 0x1000, 0x0100
IFF_VNET_HDR, IFF_TUN_EXCL = 0x4000, 0x8000

# message layouts
NLMSGHDR = struct.Struct("=IHHII")  # struct nlmsghdr
IFINFOMSG = struct.Struct("=BxHiII")  # struct ifinfomsg
RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
NDMSG = struct.Struct("=BxxxiHBB")  # struct ndmsg
IFADDRMSG = struct.Struct("=BBBBI")  # struct ifaddrmsg
NLATTR = struct.Struct("=HH")  # struct nlattr
