"""Executors: apply plan steps to the host (kernel, OVS, firewall).

``registry`` lists the handler of every step kind; ``engine`` sequences them.
Nothing here imports pyroute2, OVS or nftables until a step needs it.
"""
